#!/usr/bin/env python3
"""Turns loadtest/run.sh's results.tsv into a markdown table (every run, with
Portico's ratios to the faster of nginx and HAProxy in the same round, then a
summary) and an SVG plot of the latency percentiles and CPU per request.

    report.py RESULTS_TSV TABLE_MD PLOT_SVG HEADER
"""
import csv
import math
import statistics
import sys

PROXIES = ["nginx", "haproxy", "portico"]
NAMES = {"direct": "backend direct", "nginx": "nginx", "haproxy": "HAProxy", "portico": "Portico"}
COLORS = {"nginx": "#2e7d32", "haproxy": "#1565c0", "portico": "#c62828"}
TITLES = {
    "keepalive64": "HTTP/1.1 keep-alive, 64 conns",
    "keepalive256": "HTTP/1.1 keep-alive, 256 conns",
    "close": "new connection per request",
    "https": "HTTPS keep-alive",
    "h2": "HTTP/2 over TLS, h2load -m 10",
    "1mib": "1 MiB response",
    "websocket": "WebSocket round trips, 64 active + 1,000 open sockets",
    "h2upstream": "HTTP/2 to the backend (h2c both sides), h2load -m 10",
}


def num(v):
    try:
        return float(v)
    except ValueError:
        return None


def load(path):
    with open(path) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    scenarios = []
    for r in rows:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    return rows, scenarios


def fmt_int(v):
    return f"{v:,.0f}" if v is not None else "–"


def fmt(v, unit=""):
    return f"{v:g}{unit}" if v is not None else "–"


def faster(rows, scenario, rnd):
    """The faster (by req/s) of nginx and HAProxy in one round."""
    cands = [r for r in rows if r["scenario"] == scenario and r["round"] == rnd and r["proxy"] in ("nginx", "haproxy")]
    return max(cands, key=lambda r: num(r["req_s"]) or 0) if cands else None


def table(rows, scenarios, header):
    out = [f"Load test: {header}.", ""]
    summary = []
    for s in scenarios:
        out += [f"### {TITLES.get(s, s)} (`{s}`)", "",
                "| round | proxy | req/s | p50 | p99 | p99.9 | CPU per request | peak RSS | errors | req/s ÷ faster | p99 ÷ faster | CPU ÷ faster |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        tput, p99s, cpus, lower_cpu = [], [], [], []
        for r in (x for x in rows if x["scenario"] == s):
            ratios = ["–", "–", "–"]
            if r["proxy"] == "portico":
                best = faster(rows, s, r["round"])
                if best:
                    q = [num(r[k]) / num(best[k]) if num(r[k]) and num(best[k]) else None
                         for k in ("req_s", "p99_ms", "cpu_us_per_req")]
                    ratios = [f"{v:.2f}×" if v is not None else "–" for v in q]
                    tput.append(q[0]); p99s.append(q[1]); cpus.append(q[2])
                    others = [num(x["cpu_us_per_req"]) for x in rows if x["scenario"] == s and x["round"] == r["round"] and x["proxy"] in ("nginx", "haproxy")]
                    if num(r["cpu_us_per_req"]) and all(others):
                        lower_cpu.append(num(r["cpu_us_per_req"]) / min(others))
            cpu = num(r["cpu_us_per_req"])
            rss = num(r["peak_rss_mib"])
            out.append(f"| {r['round']} | {NAMES[r['proxy']]} | {fmt_int(num(r['req_s']))} | {fmt(num(r['p50_ms']), ' ms')} | "
                       f"{fmt(num(r['p99_ms']), ' ms')} | {fmt(num(r['p999_ms']), ' ms')} | {fmt(cpu, ' µs')} | "
                       f"{fmt(rss, ' MiB')} | {r['errors']} | " + " | ".join(ratios) + " |")
        out.append("")
        rng = lambda v: f"{min(v):.2f}–{max(v):.2f}×" if v and all(x is not None for x in v) else "–"
        peak = {p: max((num(x["peak_rss_mib"]) or 0) for x in rows if x["scenario"] == s and x["proxy"] == p) for p in PROXIES}
        summary.append(f"| {TITLES.get(s, s)} | {rng(tput)} | {rng(p99s)} | {rng(cpus)} | {rng(lower_cpu)} | "
                       + " / ".join(f"{peak[p]:g}" for p in PROXIES) + " MiB |")
    out = out[:2] + ["Portico against the faster of nginx and HAProxy in each round (min–max over the rounds):", "",
                     "| scenario | req/s | p99 | CPU per request | CPU ÷ the lower of the two | peak RSS nginx / HAProxy / Portico |",
                     "|---|---|---|---|---|---|"] + summary + [""] + out[2:]
    return "\n".join(out) + "\n"


def svg(rows, scenarios, header):
    """Two panels: latency percentiles (log scale) and CPU per request,
    medians over the rounds, one group of bars per scenario."""
    med = {}
    for s in scenarios:
        for p in PROXIES:
            rs = [x for x in rows if x["scenario"] == s and x["proxy"] == p]
            for k in ("p50_ms", "p99_ms", "p999_ms", "cpu_us_per_req"):
                vals = [num(x[k]) for x in rs if num(x[k])]
                med[(s, p, k)] = statistics.median(vals) if vals else None
    group_w, left, top, panel_h = 170, 70, 60, 260
    width = left + group_w * len(scenarios) + 40
    height = top + 2 * panel_h + 140
    e = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{left}" y="20" font-size="13" font-weight="bold">Latency (p50 / p99 / p99.9, log scale) and proxy CPU per request — medians over the rounds</text>',
         f'<text x="{left}" y="38" fill="#555">{header[:160]}</text>']
    # Panel 1: latency, log10 scale from 0.01 ms to the largest value.
    lat = [v for (s, p, k), v in med.items() if k != "cpu_us_per_req" and v]
    lo, hi = math.log10(0.01), math.log10(max(lat) * 1.5) if lat else 1.0
    y0 = top + panel_h
    def ly(v):
        return y0 - (math.log10(max(v, 0.01)) - lo) / (hi - lo) * (panel_h - 20)
    for d in range(-2, math.ceil(hi) + 1):
        y = ly(10 ** d)
        if y < top:
            continue
        e.append(f'<line x1="{left}" x2="{width - 30}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        e.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{10 ** d:g} ms</text>')
    bar = (group_w - 30) / 9
    for i, s in enumerate(scenarios):
        gx = left + i * group_w + 10
        for j, p in enumerate(PROXIES):
            for k, key in enumerate(("p50_ms", "p99_ms", "p999_ms")):
                v = med[(s, p, key)]
                if not v:
                    continue
                x = gx + (j * 3 + k) * bar
                y = ly(v)
                e.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 1:.1f}" height="{y0 - y:.1f}" fill="{COLORS[p]}" fill-opacity="{(0.45, 0.7, 1.0)[k]}"><title>{NAMES[p]} {key[:-3]} {v} ms</title></rect>')
        e.append(f'<text x="{gx + (group_w - 30) / 2:.1f}" y="{y0 + 14}" text-anchor="middle">{s}</text>')
    # Panel 2: CPU per request, linear.
    top2 = y0 + 50
    y1 = top2 + panel_h
    cpu = [v for (s, p, k), v in med.items() if k == "cpu_us_per_req" and v]
    cmax = max(cpu) * 1.1 if cpu else 1.0
    step = 10 ** math.floor(math.log10(cmax / 2)) if cmax > 0 else 1
    t = 0.0
    while t <= cmax:
        y = y1 - t / cmax * (panel_h - 20)
        e.append(f'<line x1="{left}" x2="{width - 30}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        e.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g} µs</text>')
        t += step
    bar2 = (group_w - 30) / 3
    for i, s in enumerate(scenarios):
        gx = left + i * group_w + 10
        for j, p in enumerate(PROXIES):
            v = med[(s, p, "cpu_us_per_req")]
            if not v:
                continue
            h = v / cmax * (panel_h - 20)
            x = gx + j * bar2
            e.append(f'<rect x="{x:.1f}" y="{y1 - h:.1f}" width="{bar2 - 2:.1f}" height="{h:.1f}" fill="{COLORS[p]}"><title>{NAMES[p]} {v} µs</title></rect>')
            e.append(f'<text x="{x + bar2 / 2 - 1:.1f}" y="{y1 - h - 3:.1f}" text-anchor="middle" font-size="9">{v:.0f}</text>')
        e.append(f'<text x="{gx + (group_w - 30) / 2:.1f}" y="{y1 + 14}" text-anchor="middle">{s}</text>')
    e.append(f'<text x="{left}" y="{top2 - 10}" font-weight="bold">CPU per request</text>')
    lx = left
    for p in PROXIES:
        e.append(f'<rect x="{lx}" y="{height - 40}" width="12" height="12" fill="{COLORS[p]}"/><text x="{lx + 16}" y="{height - 30}">{NAMES[p]}</text>')
        lx += 110
    e.append(f'<text x="{lx + 20}" y="{height - 30}" fill="#555">latency bars per proxy: p50 (light), p99, p99.9 (dark)</text>')
    e.append("</svg>")
    return "\n".join(e) + "\n"


def main():
    results, table_md, plot_svg, header = sys.argv[1:5]
    rows, scenarios = load(results)
    with open(table_md, "w") as f:
        f.write(table(rows, scenarios, header))
    with open(plot_svg, "w") as f:
        f.write(svg(rows, scenarios, header))


if __name__ == "__main__":
    main()
