"""Recovery into Azure: page-blob VHDs, managed disks, NICs, VMs (see :mod:`.target`)."""
