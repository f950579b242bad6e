"""The CPU passes: each conv's layout (``CpuLayout``) and the kernels' schedules
(``ScheduleConvs``)."""
