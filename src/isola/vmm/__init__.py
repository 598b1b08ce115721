"""isola-vmm: a KVM virtual machine monitor (kernel mode boots Linux; process mode runs one program)."""
