"""Recovery targets: where recovered machines run (local QEMU, AWS, Azure), by capability."""
