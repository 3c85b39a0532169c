"""Screenshot one figure of a Snakemake HTML report as a reader opens it (docs/analysis.md "The HTML report").

Optional companion of screenshot.sh (which captures the front page): it clicks through the report's menu with
Playwright (``pip install playwright`` into any environment; no browser download: it drives Debian's chromium).

    python workflow/report/screenshot_category.py REPORT.html OUT.png Analysis neighbourhood analysis_neighbourhood.png
"""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright


def main(report: str, out: str, *clicks: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(Path(report).resolve().as_uri())
        page.wait_for_timeout(1500)
        for text in clicks:  # menu entries: category, subcategory, then the file toggle
            page.get_by_text(text, exact=True).first.click()
            page.wait_for_timeout(500)
        page.locator("td a, td button, td svg").first.click()  # the "view" control of the first row
        page.wait_for_timeout(1500)
        page.screenshot(path=out)
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
