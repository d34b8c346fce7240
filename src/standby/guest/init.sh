#!/bin/busybox sh
# /init of the standby test guest (PID 1). Loads the virtio modules, starts qemu-ga on its virtio-serial
# port and busybox acpid (ACPI power button -> clean power-off), prints the ready marker on the serial
# console, then starts what the kernel command line asks for:
#   standby.writer=raw:/dev/vda[:rate=R][:id=N][:count=N][:cite=PATH][:status=PATH]
#   standby.writer=ext4:/dev/vda[:...]   (formats the disk if it holds no ext4, appends to /records.bin)
# The parameter may be given several times (one writer each).
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
mkdir -p /proc /sys /dev /run /tmp /mnt
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
exec >/dev/console 2>&1 </dev/null

for m in $(cat /etc/modules.order); do insmod "$m" 2>/dev/null; done
mdev -s 2>/dev/null

for port in /sys/class/virtio-ports/*; do
  [ -e "$port/name" ] || continue
  if [ "$(cat "$port/name")" = org.qemu.guest_agent.0 ]; then
    mkdir -p /run/qga
    /usr/sbin/qemu-ga -m virtio-serial -p "/dev/${port##*/}" -t /run/qga -f /run/qga.pid -d \
      && echo "STANDBY-GUEST-AGENT /dev/${port##*/}"
  fi
done
acpid -c /etc/acpi -l /run/acpid.log -p /run/acpid.pid 2>/dev/null

start_writer() {
  spec=$1
  mode=${spec%%:*}; rest=${spec#*:}
  dev=${rest%%:*}; opts=""
  [ "$rest" != "$dev" ] && opts=$(echo "${rest#*:}" | tr ':' ' ')
  case $mode in
    raw) target=$dev ;;
    ext4)
      mnt=/mnt/${dev##*/}; mkdir -p "$mnt"
      # The ext2/3/4 superblock magic 0xEF53 sits at byte 1080; only a disk without it is formatted.
      magic=$(dd if="$dev" bs=2 skip=540 count=1 2>/dev/null | od -An -tx1 | tr -d ' ')
      [ "$magic" = 53ef ] || /sbin/mke2fs -q -F -t ext4 "$dev"
      mount -t ext4 "$dev" "$mnt" || { echo "STANDBY-GUEST-ERROR cannot mount $dev"; return; }
      target=$mnt/records.bin; mode=file ;;
    *) echo "STANDBY-GUEST-ERROR unknown writer mode $mode"; return ;;
  esac
  # shellcheck disable=SC2086
  /bin/writer "$mode" "$target" $opts &
  echo $! >> /run/writers
}

echo "STANDBY-GUEST-READY $(uname -r)"
for word in $(cat /proc/cmdline); do
  case $word in standby.writer=*) start_writer "${word#standby.writer=}" ;; esac
done

# PID 1 must never exit; it reaps the children busybox sh leaves behind.
while true; do wait; sleep 1; done
