"""The GPU tier: devices, the device lock, the warm cache, residency across processes, memory plans.

Modules (import them directly; this package imports nothing, so importing it
never imports torch or filelock):

* ``devices`` — device/dtype resolution, OOM recognition and the typed ``ModelOOMError``;
* ``memory_options`` — ``MemoryOptions`` (the profile's ``memory:``) and ``apply_memory_options``;
* ``memory_plans`` — ``plan_for(family, total_bytes)``, ``apply_plan(pipe, plan, device)``;
* ``lock`` — the cross-process ``device_lock``;
* ``warm`` — one warm model per process, ``keep_warm_s`` timers, ``evict``;
* ``residency`` — who holds what on a device, eviction requests (item "one GPU, seven processes");
* ``context`` — ``model_context``, ``LoadSpec``, ``ModelHandle``.

``sparkle_motion.gpu_utils`` re-exports the public names for the backends.
"""
