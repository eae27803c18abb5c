-- Requests a rotation: any new value of rdscred.io/rotate-requested-at triggers exactly one
-- (the controller records the value it served in status.lastRotationRequest).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["rdscred.io/rotate-requested-at"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
