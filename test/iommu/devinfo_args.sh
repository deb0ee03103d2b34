#!/bin/sh
# uvio-devinfo's command line: --help tells the truth and exits 0; a bad argument gives
# one line on stderr and exit status 2, before any device is touched.
devinfo=${1:?usage: devinfo_args.sh path/to/uvio-devinfo}
fail() { echo "FAIL: $*"; exit 1; }

out=$("$devinfo" --help) || fail "--help exited $?"
echo "$out" | grep -q '^usage: uvio-devinfo' || fail "--help prints no usage line"
for opt in --vfio-mode= --vf-token= --json; do
  echo "$out" | grep -q -- "$opt" || fail "--help does not mention $opt"
done

expect_usage_error() {
  err=$("$devinfo" "$@" 2>&1 >/dev/null); rc=$?
  [ $rc -eq 2 ] || fail "'$*' exited $rc, not 2"
  [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "'$*' printed more than one line: $err"
  echo "ok: '$*' -> $err"
}
expect_usage_error
expect_usage_error --bogus
expect_usage_error --vfio-mode=fast 0000:01:00.0
expect_usage_error --vf-token=nope 0000:01:00.0
expect_usage_error not-a-device
expect_usage_error 0000:01:00.0 0000:02:00.0
exit 0
