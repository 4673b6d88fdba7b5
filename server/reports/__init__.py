"""The compliance report: gathered once (`data.build_report`), then drawn as PDF, HTML or CSV.

Every format shows the same report — summary, trend chart, worst groups, time
to remediate, open violations, active exceptions and their expiry — so what a
manager reads in the PDF is what the dashboard download and `warden report
compliance` give.
"""
