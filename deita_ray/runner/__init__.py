"""The runner under every stage: output layout, markers, the run lock, Ray start and sizing, quarantine, summaries
and the one map-job function (Ray Data or in-process). See map_job.py."""
