-- Argo CD health check for lorapack.io BaseModelPool and LoraAdapter (both carry the kstatus
-- conditions Ready, Reconciling and Stalled plus status.observedGeneration).
--
-- Install it in argocd-cm under
--   resource.customizations.health.lorapack.io_BaseModelPool
--   resource.customizations.health.lorapack.io_LoraAdapter
-- (docs/gitops.md shows the ConfigMap). Argo CD runs it with the object as the global `obj`
-- (gopher-lua, Lua 5.1): it returns {status = Healthy | Progressing | Degraded, message = ...}.
--
--   status absent, or observedGeneration behind metadata.generation  -> Progressing
--   Stalled=True (a person must change something)                    -> Degraded
--   Ready=True                                                         -> Healthy
--   anything else (Reconciling=True: downloading, loading, scaling)   -> Progressing
-- The generation check comes first: a condition computed for an older spec says nothing about
-- the spec Argo CD just applied.

local hs = {}

local function find_condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

local function is_true(condition)
  return condition ~= nil and condition.status == "True"
end

local function explain(condition, fallback)
  if condition == nil then
    return fallback
  end
  local reason = condition.reason or ""
  local message = condition.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  if reason ~= "" then
    return reason
  end
  return fallback
end

local metadata = obj.metadata or {}
local status = obj.status
local generation = metadata.generation

if metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Deleting: lorapack unloads and unroutes it before the finalizer is removed"
  return hs
end

if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the lorapack operator to report status"
  return hs
end

if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = string.format(
    "Waiting for the lorapack operator to observe generation %d (status is for generation %d)",
    generation, status.observedGeneration)
  return hs
end

local ready = find_condition(status, "Ready")
local reconciling = find_condition(status, "Reconciling")
local stalled = find_condition(status, "Stalled")

-- Conditions carry their own observedGeneration; a stale Ready must not pass for a fresh one.
if ready ~= nil and ready.observedGeneration ~= nil and generation ~= nil
    and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = string.format("Ready was computed for generation %d; waiting for %d",
    ready.observedGeneration, generation)
  return hs
end

if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = explain(stalled, "Stalled")
  return hs
end

if is_true(ready) then
  hs.status = "Healthy"
  hs.message = explain(ready, "Ready")
  return hs
end

hs.status = "Progressing"
if is_true(reconciling) then
  hs.message = explain(reconciling, "Reconciling")
else
  hs.message = explain(ready, "Waiting for the Ready condition")
end
return hs
