"""Summarises checkov's JSON output (one or more reports, as `checkov -o json` prints them):
counts per framework, every failed check, and every skipped check with its written reason.
Exits 1 on any failed check or parsing error, or on a skip without a reason. Checkov without a
platform key reports no severities, so every failed check counts, whatever its severity.

usage: python checkov_summary.py CHECKOV.json
"""
import json
import sys

text = open(sys.argv[1]).read()
decoder, i, reports = json.JSONDecoder(), 0, []
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    obj, i = decoder.raw_decode(text, i)
    reports += obj if isinstance(obj, list) else [obj]

bad = 0
for r in reports:
    if "results" not in r:  # a framework that found nothing to scan
        continue
    s = r["summary"]
    print(f"  checkov {r['check_type']}: {s['passed']} passed, {s['failed']} failed, "
          f"{s['skipped']} skipped, {s['parsing_errors']} parsing errors")
    bad += s["failed"] + s["parsing_errors"]
    for c in r["results"].get("failed_checks", []):
        print(f"    FAILED {c['check_id']} ({c['check_name']}): {c['resource']} in {c['file_path']}")
    skips = {}
    for c in r["results"].get("skipped_checks", []):
        reason = (c["check_result"].get("suppress_comment") or "").strip()
        if not reason or reason == "No comment provided":
            print(f"    SKIPPED WITHOUT A REASON {c['check_id']}: {c['resource']} in {c['file_path']}")
            bad += 1
        skips.setdefault((c["check_id"], c["check_name"], reason), set()).add(c["resource"])
    for (check, name, reason), resources in sorted(skips.items()):
        print(f"    skipped {check} ({name}) on {len(resources)} resource(s): {reason}")
sys.exit(1 if bad else 0)
