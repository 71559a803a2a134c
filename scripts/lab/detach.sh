# Sourced by the lab's start scripts (up.sh, hosts-up.sh).
#
# detach CMD...: run CMD in its own session, in the background, with none of the descriptors
# above 2 that this shell holds or inherited (the script's own lock, a `flock` around the lab's
# scripts, a test runner's pipes): a daemon started here would hold them for as long as it runs,
# and the next `flock` on them would wait forever. The caller redirects 0-2; $! is CMD's pid.
detach() {
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid "$@"
  ) &
}
