#!/usr/bin/env python3
"""Removes the DWARF unwind tables (.eh_frame, .eh_frame_hdr) from a static layer binary.

Why: the wrapper never needs to unwind (a panic there aborts, which is what it did before the
extension's panics were contained) and is stripped, so a backtrace would have no symbols to show
anyway; the tables are ~33 KB of it. The extension keeps its tables: it unwinds to contain bugs
(extension/src/contain.rs). What still walks the stack — std's backtrace capture
under RUST_BACKTRACE — finds no unwind information and stops at the first frame instead.

How:
  1. GNU objcopy for the binary's architecture removes the two sections. They are the tail of the
     first (read-only) segment, so objcopy shrinks that segment and moves the later ones down in
     the file, keeping their addresses (LLVM's objcopy removes the sections but keeps the bytes).
  2. The PT_GNU_EH_FRAME program header objcopy leaves behind (now zero-sized, pointing past the
     read-only segment) becomes PT_NULL, so an unwinder looking for an .eh_frame_hdr through
     dl_iterate_phdr finds none rather than reading whatever lies at that address.

Usage: drop_unwind_tables.py BINARY...   (in place)
"""
import os
import shutil
import struct
import subprocess
import sys

PT_NULL = 0
PT_GNU_EH_FRAME = 0x6474E550


MACHINES = {62: "x86_64", 183: "aarch64"}  # e_machine: EM_X86_64, EM_AARCH64


def objcopy_for(path):
    """GNU objcopy for the binary's architecture: `<arch>-linux-gnu-objcopy`, or the host's own."""
    with open(path, "rb") as f:
        head = f.read(20)
    (machine,) = struct.unpack_from("<H", head, 18)
    arch = MACHINES.get(machine)
    if arch is None:
        sys.exit(f"drop_unwind_tables: {path}: unexpected ELF machine {machine}")
    for tool in (f"{arch}-linux-gnu-objcopy", "objcopy" if os.uname().machine == arch else None):
        if tool and shutil.which(tool):
            return tool
    sys.exit(f"drop_unwind_tables: no objcopy for {arch} (Debian: binutils-{arch.replace('_', '-')}-linux-gnu)")


def null_eh_frame_header(path):
    """Turns PT_GNU_EH_FRAME into PT_NULL; returns how many headers were changed."""
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            sys.exit(f"drop_unwind_tables: {path} is not a 64-bit little-endian ELF")
        (e_phoff,) = struct.unpack_from("<Q", data, 32)
        e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
        changed = 0
        for i in range(e_phnum):
            off = e_phoff + i * e_phentsize
            (p_type,) = struct.unpack_from("<I", data, off)
            if p_type == PT_GNU_EH_FRAME:
                struct.pack_into("<I", data, off, PT_NULL)
                changed += 1
        f.seek(0)
        f.write(data)
    return changed


def main(paths):
    if not paths:
        sys.exit(__doc__)
    for path in paths:
        before = os.path.getsize(path)
        subprocess.run(
            [objcopy_for(path), "--remove-section=.eh_frame", "--remove-section=.eh_frame_hdr", path],
            check=True,
        )
        null_eh_frame_header(path)
        after = os.path.getsize(path)
        print(f"[layer] {path}: unwind tables dropped, {before} -> {after} bytes", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
