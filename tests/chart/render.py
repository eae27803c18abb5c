"""Renders charts/rdscred with the real Helm library (helm-python-sdk) and prints the objects
of one template as multi-document YAML. The Rust integration tests use it to load the chart's
own RBAC into the Kubernetes API emulator:

    .venv/bin/python tests/chart/render.py VALUES_JSON [TEMPLATE] [NAMESPACE] [RELEASE]

TEMPLATE is a file name under templates/ (default rbac.yaml)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import helm_python as helm

CHART = Path(__file__).resolve().parents[2] / "charts" / "rdscred"


def main() -> None:
    values = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    template = sys.argv[2] if len(sys.argv) > 2 else "rbac.yaml"
    namespace = sys.argv[3] if len(sys.argv) > 3 else "rdscred-system"
    release = sys.argv[4] if len(sys.argv) > 4 else "rdscred"
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    docs = [text for path, text in sorted(rendered.items()) if path.endswith("/templates/" + template)]
    if not docs:
        sys.exit(f"no template {template} in the rendered chart: {sorted(rendered)}")
    sys.stdout.write("\n---\n".join(docs))


if __name__ == "__main__":
    main()
