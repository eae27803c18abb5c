-- Argo CD actions for rdscred.io/v1alpha1 RdsCredential.
--   rotate:  request a rotation now (the controller's rdscred.io/rotate-requested-at annotation).
--            Disabled when rdscred does not rotate this credential (rotator: lambda), and while
--            a request is pending (the annotation differs from status.lastRotationRequest).
--   refresh: reconcile now (the rdscred.io/refresh-requested-at annotation; no other effect).
local actions = {}
actions["rotate"] = {["disabled"] = false}
actions["refresh"] = {["disabled"] = false}

local rotation = obj.spec ~= nil and obj.spec.rotation or nil
if rotation ~= nil and rotation.rotator == "lambda" then
  actions["rotate"]["disabled"] = true
end

local annotations = obj.metadata ~= nil and obj.metadata.annotations or nil
local requested = annotations ~= nil and annotations["rdscred.io/rotate-requested-at"] or nil
local served = obj.status ~= nil and obj.status.lastRotationRequest or nil
if requested ~= nil and requested ~= "" and requested ~= served then
  actions["rotate"]["disabled"] = true
end

return actions
