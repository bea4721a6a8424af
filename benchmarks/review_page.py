"""Page load times of the examiner's review page, measured in headless Chromium.

Starts the same small store as the browser tests (4 synthetic casings, seed 5; gRPC server
and review page on loopback), logs in, and reads each page's navigation timing
(``loadEventEnd - startTime``: request, server work, HTML, script, stylesheet and, for the
comparison, its three pictures). Writes ``benchmarks/results/review-page.json`` and, with
``--screenshots DIR``, small PNG screenshots of the main pages.

    python benchmarks/review_page.py --repeat 5 --screenshots docs
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    import cv2
    import numpy as np
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.test_web_browser import images_loaded, load_ms, login, new_driver
    from tests.test_web_support import review_server

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--screenshots", help="folder for small screenshots (review-*.png)")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/review-page.json"))
    opts = ap.parse_args()

    def small(name: str, raw: bytes) -> None:
        if not opts.screenshots:
            return
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        h, w = img.shape[:2]
        img = cv2.resize(img, (640, round(h * 640 / w)), interpolation=cv2.INTER_AREA)
        Path(opts.screenshots).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(
            str(Path(opts.screenshots) / f"review-{name}.png"),
            img,
            [cv2.IMWRITE_PNG_COMPRESSION, 9],
        )

    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, review_server(Path(tmp)) as r:
        d = new_driver()
        try:
            wait = WebDriverWait(d, 300)
            login(d, r.url, r.srv.tokens["north_exam"])
            wait.until(lambda x: x.current_url.endswith("/queue"))
            q = r.ids["q"]
            for _ in range(opts.repeat):  # each runs the Search RPC (audited) and renders
                d.get(f"{r.url}/search?casing_id={q}")
                rows.setdefault("candidate list (search run + page)", []).append(load_ms(d))
            listing = d.current_url
            small("candidates", d.get_screenshot_as_png())
            for _ in range(opts.repeat):
                d.get(listing)
                rows.setdefault("candidate list (stored search, page only)", []).append(load_ms(d))
            for name in ("mate", "other"):  # first view: the comparison is computed
                d.get(f"{r.url}/compare?a={q}&b={r.ids[name]}")
                wait.until(lambda x: images_loaded(x, ["img-a", "img-b", "img-overlay"]))
                rows.setdefault("comparison, first view (compare computed)", []).append(load_ms(d))
            for _ in range(opts.repeat):  # again: the pair's comparison is cached
                d.get(f"{r.url}/compare?a={q}&b={r.ids['mate']}")
                wait.until(lambda x: images_loaded(x, ["img-a", "img-b", "img-overlay"]))
                rows.setdefault("comparison, repeat view (cached)", []).append(load_ms(d))
            small("comparison", d.get_screenshot_as_png())
            d.get(f"{r.url}/queue")
            small("queue", d.get_screenshot_as_png())
            d.get(f"{r.url}/report?a={q}&b={r.ids['mate']}")
            small("report", d.get_screenshot_as_png())
            version = d.capabilities.get("browserVersion", "?")
        finally:
            d.quit()
    out = {
        "command": "python benchmarks/review_page.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()},"
        f" Python {platform.python_version()}, Chromium {version}",
        "store": "4 synthetic casings (2 guns x 2 shots, seed 5), loopback",
        "load_ms": {k: v for k, v in rows.items()},
        "median_ms": {k: statistics.median(v) for k, v in rows.items()},
    }
    Path(opts.out).write_text(json.dumps(out, indent=2) + "\n")
    for k, v in rows.items():
        print(f"{k:48s} median {statistics.median(v):7.0f} ms  (n={len(v)}, max {max(v):.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
