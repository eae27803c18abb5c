-- Argo CD health check for rdscred.io/v1alpha1 RdsCredential and RdsDatabase.
--   Progressing: no status yet, the current generation not observed yet, Reconciling=True
--                (work in progress that ends by itself: provisioning, a database not ready
--                yet), a rotation running, or no Ready condition yet;
--   Degraded:    Stalled=True (a person is needed: refused, invalid, access denied), or
--                Ready=False without a kstatus condition saying otherwise (the condition's
--                reason and message say why);
--   Healthy:     Ready=True for the current generation.
local hs = {}

local function condition(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  local msg = c.message
  if msg == nil or msg == "" then
    msg = fallback
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason .. ": " .. msg
  end
  return msg
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to report status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local ready = condition(conditions, "Ready")

-- kstatus conditions first: they say whether a not-Ready object needs a person.
local stalled = condition(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

local reconciling = condition(conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready, "Not ready")
  return hs
end

local rotating = condition(conditions, "Rotating")
if rotating ~= nil and rotating.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(rotating, "Rotation in progress")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  local drifted = condition(conditions, "Drifted")
  if drifted ~= nil and drifted.status == "True" then
    hs.message = hs.message .. " (drift detected: " .. describe(drifted, "AWSCURRENT does not log in") .. ")"
  end
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready, "Ready condition is " .. tostring(ready.status))
else
  hs.message = "Waiting for the Ready condition"
end
return hs
