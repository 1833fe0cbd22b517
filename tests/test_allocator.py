"""ssl_minimal.allocator: freed tensors stay in the process for reuse (glibc malloc thresholds raised)."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the malloc tuning applies to Linux with glibc only")

# Allocates and frees a 24 MiB tensor (below the 32 MiB fallback threshold) and prints how many MiB of
# resident memory the process kept after the free: ~24 when freed memory is kept, ~0 when it went back.
KEPT_AFTER_FREE = """
import os, torch, ssl_minimal
def resident_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before = resident_mib()
block = torch.ones(6 * 2**20)        # 24 MiB, every page touched
del block
print(ssl_minimal.allocator.keep_freed_memory() if ssl_minimal.allocator.malloc_tuning_wanted() else False,
      resident_mib() - before)
"""


def run_fresh_python(tuning: str) -> tuple[str, float]:
    env = {**os.environ, "SSL_MALLOC_TUNING": tuning}
    output = subprocess.run([sys.executable, "-c", KEPT_AFTER_FREE], env=env, capture_output=True, text=True,
                            check=True).stdout.split()
    return output[0], float(output[1])


def test_import_keeps_freed_memory_for_reuse():
    applied, kept_mib = run_fresh_python("1")
    assert applied == "True"
    assert kept_mib > 16, f"only {kept_mib:.1f} MiB of a freed 24 MiB tensor stayed in the process"


def test_the_environment_variable_switches_it_off():
    applied, kept_mib = run_fresh_python("0")
    assert applied == "False"
    assert kept_mib < 8, f"{kept_mib:.1f} MiB of a freed 24 MiB tensor stayed although the tuning is off"
