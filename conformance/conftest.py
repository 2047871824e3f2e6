"""Start the subprocess backends (Keras) as soon as the selected tests are known, so that they run
beside the backends of the pytest process."""

from conformance import report


def pytest_collection_modifyitems(session, config, items):
    rows = []
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is None or spec.params.get("module") is None:
            continue
        p = spec.params
        rows.append((p["name"], p["module"], p["dtype"], p["device"], p["reason"]))
    report.prefetch(rows)
