"""ssl_minimal.allocator: freed tensors stay in the process for reuse (glibc malloc thresholds raised)."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the malloc tuning applies to Linux with glibc only")

# Allocates a 24 MiB tensor (below the 32 MiB fallback threshold), frees it and prints how many MiB of
# resident memory the free gave back to the system: ~0 when freed memory is kept, ~24 when it goes back.
# (Measured across the free only, so that whatever else the interpreter allocates does not count.)
GIVEN_BACK_BY_FREE = """
import os, torch, ssl_minimal
def resident_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
block = torch.ones(6 * 2**20)        # 24 MiB, every page touched
with_block = resident_mib()
del block
after_free = resident_mib()
ssl_minimal.allocator.release_freed_memory()
print(ssl_minimal.allocator.keep_freed_memory() if ssl_minimal.allocator.malloc_tuning_wanted() else False,
      with_block - after_free, with_block - resident_mib())
"""


def run_fresh_python(tuning: str) -> tuple[str, float, float]:
    """(tuning applied?, MiB given back by the free, MiB given back once release_freed_memory ran)"""
    env = {**os.environ, "SSL_MALLOC_TUNING": tuning}
    output = subprocess.run([sys.executable, "-c", GIVEN_BACK_BY_FREE], env=env, capture_output=True, text=True,
                            check=True).stdout.split()
    return output[0], float(output[1]), float(output[2])


def test_import_keeps_freed_memory_for_reuse_until_released():
    applied, given_back, given_back_after_release = run_fresh_python("1")
    assert applied == "True"
    assert given_back < 8, f"freeing a 24 MiB tensor gave {given_back:.1f} MiB back to the system"
    assert given_back_after_release > 16, f"release_freed_memory gave back only {given_back_after_release:.1f} MiB"


def test_the_environment_variable_switches_it_off():
    applied, given_back, _ = run_fresh_python("0")
    assert applied == "False"
    assert given_back > 16, f"freeing a 24 MiB tensor gave back only {given_back:.1f} MiB although the tuning is off"
