#!/bin/sh
# Regenerates init/src/firewall/netlink/vectors.rs: the netlink messages that `nft` itself sends
# for the golden rulesets (default.nft, full.nft) and for `delete table`, captured with
# `nft --debug=mnl` inside a throwaway network namespace. nftables is a test-time tool only.
# Usage (as root): init/src/firewall/golden/capture-vectors.sh > init/src/firewall/netlink/vectors.rs
set -eu
here=$(cd "$(dirname "$0")" && pwd)
parse() {
python3 -c '
import re, sys
name = sys.argv[1]
ansi = re.compile(r"\x1b\[[0-9;]*m")
msgs = []; cur = None
for raw in sys.stdin:
    line = ansi.sub("", raw.rstrip("\n"))
    m = re.match(r"\|\s+(\d+)\s+\|\s*\| message length", line)
    if m:
        cur = {"len": int(m.group(1)), "bytes": bytearray()}; msgs.append(cur); continue
    m = re.match(r"\|\s+(\d+)\s+\|\s*([A-Z-]+)\s*\|\s*\|\s+type \| flags", line)
    if m and cur is not None and "type" not in cur:
        cur["type"] = int(m.group(1)); continue
    m = re.match(r"\|(\d{5})\|([A-Z-]{2})\|(\d{5})\|\s*\|len \|flags\| type\|", line)
    if m and cur is not None:
        l, fl, t = int(m.group(1)), m.group(2), int(m.group(3))
        if "N" in fl: t |= 0x8000
        if "B" in fl: t |= 0x4000
        cur["bytes"] += l.to_bytes(2, "little") + t.to_bytes(2, "little"); continue
    m = re.match(r"\| ([0-9a-f]{2}) ([0-9a-f]{2}) ([0-9a-f]{2}) ([0-9a-f]{2})  \|", line)
    if m and cur is not None:
        cur["bytes"] += bytes(int(g, 16) for g in m.groups())
# Keep the batch (from BATCH_BEGIN), drop the cache queries before it.
start = next(i for i, m in enumerate(msgs) if m["type"] == 16)
print(f"pub(super) const {name}: &[(u16, &str)] = &[")
for m in msgs[start:]:
    print("    (%d, \"%s\")," % (m["type"], m["bytes"][: m["len"] - 16].hex()))
print("];")
' "$1"
}
capture() { # NAME FILE
    sed 's/counter packets [0-9]* bytes [0-9]*/counter/' "$2" > /tmp/capture-vectors.nft
    unshare -n nft --debug=mnl -f /tmp/capture-vectors.nft 2>&1 | parse "$1"
}
echo '//! Known-good netlink messages: what `nft` 1.0.6 (libnftnl 1.2.4) sends, captured with'
echo '//! `nft --debug=mnl` by `golden/capture-vectors.sh`. Each entry is the message type and the'
echo '//! message after its `nlmsghdr` (the `nfgenmsg` and the attributes), in hex.'
echo
echo '/// `nft -f golden/default.nft`.'
capture DEFAULT "$here/default.nft"
echo
echo '/// `nft -f golden/full.nft`.'
capture FULL "$here/full.nft"
echo
echo '/// `nft delete table inet rampart` (on an existing table).'
printf 'table inet rampart {\n}\n' > /tmp/capture-vectors-t.nft
unshare -n sh -c 'nft -f /tmp/capture-vectors-t.nft && nft --debug=mnl delete table inet rampart' 2>&1 | parse DELETE_TABLE
rm -f /tmp/capture-vectors.nft /tmp/capture-vectors-t.nft
