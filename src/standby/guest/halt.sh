#!/bin/busybox sh
# Clean power-off of the standby test guest, installed as /sbin/shutdown (qemu-ga's guest-shutdown runs it)
# and as the ACPI power-button action. Stops the writers (each finishes the record in flight), flushes,
# unmounts, then powers off (or reboots with -r). It returns at once, as shutdown(8) does.
action=poweroff
case "$*" in *-r*) action=reboot ;; esac
(
  for pid in $(cat /run/writers 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    alive=0
    for pid in $(cat /run/writers 2>/dev/null); do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  sync
  for m in /mnt/*; do umount "$m" 2>/dev/null; done
  echo "STANDBY-GUEST-HALT $action"
  $action -f
) </dev/null >/dev/console 2>&1 &
exit 0
