"""The Prep Node: prepare a recovered machine's guest OS to boot on its target, on libguestfs.

:func:`prepare_disks` inspects the disks (``gather``), decides what the target needs
(``decide``, pure, listing every :class:`Change`), and applies it (``act``). ``targets``
holds each platform's driver needs; ``overlay`` turns a prepared copy-on-write overlay into
byte patches for targets that only accept patches.
"""
