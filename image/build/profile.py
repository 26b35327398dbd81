#!/usr/bin/env python3
"""Print a board profile (hw/<board>.toml) as shell assignments.

    eval "$(image/build/profile.py hw/nuc.toml)"

Every `key` of `[section]` becomes `HW_SECTION_KEY`; lists become
space-separated words; booleans become 1/0. Only the sections the image
uses are required; unknown ones (such as [power]) are passed through too.
"""
import shlex
import sys
import tomllib

REQUIRED = {
    "board": ["name", "arch", "rust_target"],
    "image": ["boot", "root_slot_size", "data_initial_size"],
    "storage": ["cipher", "key_size", "unlock"],
    "store": ["cache_mib", "memory_high_mib", "memory_max_mib"],
    "network": ["lan_interface", "uplink_interface"],
    "watchdog": ["runtime_sec", "service_sec"],
}


def main() -> int:
    path = sys.argv[1]
    with open(path, "rb") as f:
        profile = tomllib.load(f)
    missing = [f"[{s}] {k}" for s, keys in REQUIRED.items() for k in keys if k not in profile.get(s, {})]
    if missing:
        print(f"{path}: missing {', '.join(missing)}", file=sys.stderr)
        return 1
    for section, table in profile.items():
        if not isinstance(table, dict):
            continue
        for key, value in table.items():
            if isinstance(value, dict):
                continue
            if isinstance(value, bool):
                value = "1" if value else "0"
            elif isinstance(value, list):
                value = " ".join(str(v) for v in value)
            name = f"HW_{section}_{key}".upper().replace("-", "_")
            print(f"{name}={shlex.quote(str(value))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
