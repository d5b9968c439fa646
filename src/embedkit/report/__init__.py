"""The study report: every run under a runs folder as Markdown, self-contained HTML and figures,
opening with its findings (``findings``), then the paper's figures (``figures``), then the tables
(``tables``), collapsible in the HTML. Rendered from Jinja2 templates; Markdown through markdown-it.
"""

from embedkit.report.build import build_report
from embedkit.report.summary import Group, summarise

__all__ = ["build_report", "summarise", "Group"]
