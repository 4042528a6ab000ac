"""Tests import the whole-mesh helpers from here; they live in sparkle_motion.testing (benches use them too)."""

from sparkle_motion.testing import mesh_env, running_mesh, wait_for_status, write_test_profile

__all__ = ["mesh_env", "running_mesh", "wait_for_status", "write_test_profile"]
