from isola.cgroups.layout import Mode, detect, known_controllers
from isola.host import mountinfo

PROC_CGROUPS = """\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t1\t1
cpu\t1\t1\t1
memory\t4\t30\t1
pids\t8\t1\t1
hugetlb\t0\t1\t1
rdma\t0\t1\t0
"""

HYBRID = """\
25 30 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
28 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
"""

V2 = "30 1 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_known_controllers_are_the_enabled_ones():
    assert known_controllers(PROC_CGROUPS) == {"cpuset", "cpu", "memory", "pids", "hugetlb"}


def test_hybrid_layout_places_each_controller_where_it_lives():
    layout = detect(mountinfo.parse(HYBRID), known_controllers(PROC_CGROUPS), {"/sys/fs/cgroup/unified": "hugetlb\n"})
    assert layout.mode is Mode.HYBRID
    assert layout.v1 == {"cpu": "/sys/fs/cgroup/cpu", "memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids"}
    assert layout.v2_mount == "/sys/fs/cgroup/unified"
    assert layout.where("hugetlb") == "v2"
    assert layout.where("memory") == "v1"
    assert layout.where("cpuset") is None  # compiled in, but mounted nowhere


def test_pure_v2_and_pure_v1_and_none():
    v2 = detect(mountinfo.parse(V2), {"cpu", "memory"}, {"/sys/fs/cgroup": "cpu memory pids io"})
    assert v2.mode is Mode.V2 and v2.where("io") == "v2" and v2.v1 == {}
    v1_only = "\n".join(line for line in HYBRID.splitlines() if "cgroup2" not in line)
    assert detect(mountinfo.parse(v1_only), known_controllers(PROC_CGROUPS)).mode is Mode.V1
    assert detect([], set()).mode is Mode.NONE


def test_mountinfo_unescapes_paths_and_splits_optional_fields():
    text = r"40 25 8:1 /a\040b /mnt/with\040space rw,relatime shared:1 master:2 - ext4 /dev/sda1 rw,errors=remount-ro"
    (m,) = mountinfo.parse(text + "\nbroken line\n")
    assert m.root == "/a b"
    assert m.mountpoint == "/mnt/with space"
    assert m.fstype == "ext4" and m.source == "/dev/sda1"
    assert "errors=remount-ro" in m.super_options
