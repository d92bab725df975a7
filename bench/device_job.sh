#!/usr/bin/env bash
# A command longer than one device call (10 min), run on the lent GPU machine as a detached job, then polled.
#
#   bash bench/device_job.sh start NAME CMD...          copy the tree to /tmp/NAME/repo, install .whl/*.whl (carry
#                                                       ".whl") into /tmp/site, start CMD there; log /tmp/NAME/log
#   bash bench/device_job.sh poll NAME [SECONDS] [PATH...]
#                                                       wait up to SECONDS (default 560) for it to end; once ended,
#                                                       pack the log and PATHs (relative to /tmp/NAME/repo) into
#                                                       $OUT/NAME.tgz
#
# The machine goes back ~30 s after a call ends, and the job with it: issue each poll as soon as the last returns.
# Example (the fidelity study, ~20 min):
#   start fid python3 bench/fidelity.py --profile full --out /tmp/fid/work --results /tmp/fid/work/RESULTS.md
#   poll fid 560 ../work/runs ../work/data/events/long ../work/data/manifest.json ../work/times.json ../work/RESULTS.md
set -u
verb=${1:?start or poll}; name=${2:?job name}; shift 2
dir=/tmp/$name
case $verb in
  start)
    mkdir -p "$dir" && rm -rf "$dir/repo" "$dir/rc" "$dir/log" && cp -r . "$dir/repo" || exit 1  # no stale rc
    if ls .whl/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    fi
    cmd=$(printf '%q ' "$@")
    (cd "$dir/repo" && PYTHONPATH=/tmp/site:$dir/repo setsid nohup bash -c "$cmd > $dir/log 2>&1; echo \$? > $dir/rc" \
      >/dev/null 2>&1 < /dev/null &)
    sleep 15; tail -5 "$dir/log" ;;
  poll)
    limit=${1:-560}; shift || true
    while [ ! -f "$dir/rc" ] && [ "$SECONDS" -lt "$limit" ]; do sleep 5; done
    grep -v "it/s\]$" "$dir/log" | tail -15
    if [ -f "$dir/rc" ]; then
      echo "[device_job] $name ended, rc $(cat "$dir/rc")"
      (cd "$dir/repo" && tar czf "$OUT/$name.tgz" "$dir/log" "$@" 2>/dev/null); ls -la "$OUT"
    else
      echo "[device_job] $name still running: poll again now"
    fi ;;
  *) echo "usage: device_job.sh start|poll NAME ..." >&2; exit 2 ;;
esac
