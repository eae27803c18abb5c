-- Reconciles now: a new value of rdscred.io/refresh-requested-at wakes the controller (every
-- annotation change does), which re-syncs AWSCURRENT, the Secret and the conditions; the
-- annotation itself has no other effect (it never rotates or rolls anything by itself).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["rdscred.io/refresh-requested-at"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
