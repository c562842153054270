"""Fault scenarios: small, pure transforms of one replay row.

Each scenario maps (row index, record, actual price) to (payload, actual price),
where payload is the dict to send as JSON, or raw bytes for a malformed request.
Nothing here touches the network, a clock or global state, so every transform is
deterministic and unit-tested.  The replay applies a scenario only from the fault
point on (--fault-from ROW or --fault-after SECONDS); before it, rows go out as they are.
"""
import json

SQFT_PER_M2 = 10.7639
AREA_FEATURES = ("area", "lot_area", "total_bsmt_sf", "garage_area")
MISSING_FEATURES = ("total_bsmt_sf", "garage_area", "garage_cars", "kitchen_qual")
NEW_NEIGHBORHOOD = "NewDevelopment"  # a subdivision built after the model was trained
PRICE_SHOCK = 1.3
BAD_REQUEST_EVERY = 5  # one row in five becomes a malformed request


def baseline(index: int, record: dict, actual: float):
    """No fault."""
    return record, actual


def unit_change(index: int, record: dict, actual: float):
    """An upstream system starts sending areas in m² instead of ft²."""
    changed = dict(record)
    for name in AREA_FEATURES:
        if changed.get(name) is not None:
            changed[name] = round(changed[name] / SQFT_PER_M2, 1)
    return changed, actual


def missing(index: int, record: dict, actual: float):
    """An upstream system stops filling some fields: they arrive as null (the API's "unknown")."""
    changed = dict(record)
    for name in MISSING_FEATURES:
        changed[name] = None
    return changed, actual


def new_category(index: int, record: dict, actual: float):
    """Houses from a neighbourhood the model never saw."""
    return dict(record, neighborhood=NEW_NEIGHBORHOOD), actual


def price_shock(index: int, record: dict, actual: float):
    """The market moves: actual prices are 30% higher. Inputs look normal; only feedback shows it."""
    return record, actual * PRICE_SHOCK


def _malformed_json(record):
    return json.dumps(record).encode()[:-7] + b'"oops'  # cut short: not JSON any more


def _number_as_string(record):
    return json.dumps(dict(record, area=str(record["area"]))).encode()


def _negative_area(record):
    return json.dumps(dict(record, area=-abs(record["area"] or 1))).encode()


def _unknown_field(record):
    return json.dumps(dict(record, colour="blue")).encode()


def _missing_field(record):
    return json.dumps({k: v for k, v in record.items() if k != "year_built"}).encode()


BAD_KINDS = (_malformed_json, _number_as_string, _negative_area, _unknown_field, _missing_field)


def bad_requests(index: int, record: dict, actual: float):
    """A share of bad requests (one row in BAD_REQUEST_EVERY), cycling through five kinds of mistake.

    Bad payloads are bytes, so that the replay sends each alone (in batch mode too):
    a share of the requests is bad, not every batch that happens to hold a bad row.
    """
    if index % BAD_REQUEST_EVERY != 0:
        return record, actual
    kind = BAD_KINDS[(index // BAD_REQUEST_EVERY) % len(BAD_KINDS)]
    return kind(record), actual


SCENARIOS = {
    "baseline": baseline,
    "unit-change": unit_change,
    "missing": missing,
    "new-category": new_category,
    "price-shock": price_shock,
    "bad-requests": bad_requests,
}
