"""The small ``replay-assets`` command: demo data, SQL over the warehouse, backfills, the demo job."""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from replay_assets.errors import ReplayAssetsError

if TYPE_CHECKING:
    import duckdb

    from replay_assets.landing.backends import LandingBackend
    from replay_assets.settings import Settings


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from None


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from replay_assets.automation.backfill import yesterday_utc
    from replay_assets.landing.sample import write_sample_landing_zone

    end = args.end_date or yesterday_utc()
    counts = write_sample_landing_zone(Path(args.dir), days=args.days, end_date=end, seed=args.seed)
    first = end - dt.timedelta(days=args.days - 1)
    print(f"wrote a demo landing zone for {first}..{end} in {args.dir}: {counts}")
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    from replay_assets.warehouse.sql import connect

    conn = connect(warehouse=args.warehouse)
    relation = conn.sql(args.sql)
    if relation is None:
        return 0
    if args.csv:
        _print_csv(relation)
    else:
        relation.show(max_rows=args.max_rows, max_width=200)
    return 0


def _print_csv(relation: duckdb.DuckDBPyRelation) -> None:
    import csv

    writer = csv.writer(sys.stdout)
    writer.writerow(relation.columns)
    while rows := relation.fetchmany(10_000):
        writer.writerows(rows)


def _backend(settings: Settings) -> LandingBackend:
    from dagster_aws.s3 import S3Resource

    from replay_assets.landing.backends import open_landing
    from replay_assets.settings import aws_region

    return open_landing(settings.landing_uri, S3Resource(region_name=aws_region()).get_client)


def _run_backfill(
    start: dt.date | None, end: dt.date | None, select: Sequence[str] | None, webserver: str | None
) -> str:
    from replay_assets.automation import backfill
    from replay_assets.definitions import defs
    from replay_assets.settings import Settings

    settings = Settings.from_env()
    days = backfill.plan_range(
        first_partition=settings.partitions_start,
        start=start,
        end=end,
        backend=_backend(settings) if start is None else None,
    )
    keys = backfill.asset_keys(defs, select)
    names = ", ".join(k.to_user_string() for k in keys)
    if webserver:
        backfill_id = backfill.launch_through_webserver(webserver, keys, days)
        print(f"launched backfill {backfill_id} of {names} for {days.start}..{days.end} on {webserver}")
        return backfill_id
    print(f"running {names} for {days.start}..{days.end} as one run")
    run_id = backfill.run_in_process(defs, keys, days)
    print(f"run {run_id} succeeded")
    return run_id


def _cmd_backfill(args: argparse.Namespace) -> int:
    if not args.all and args.start_date is None:
        raise ValueError("give --all or --start-date")
    select = [s for s in args.select.split(",") if s] if args.select else None
    _run_backfill(args.start_date, args.end_date, select, args.webserver)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from replay_assets.automation.backfill import yesterday_utc
    from replay_assets.landing.sample import SAMPLE_MARKER, write_sample_landing_zone
    from replay_assets.settings import Settings
    from replay_assets.warehouse.layout import warehouse_root
    from replay_assets.warehouse.selection import available_partitions
    from replay_assets.warehouse.sql import connect

    settings = Settings.from_env()
    if "://" in settings.landing_uri:
        raise ValueError("the demo writes its sample data to a local landing zone; unset REPLAY_LANDING_URI")
    end = yesterday_utc()
    start = end - dt.timedelta(days=args.days - 1)
    landing = Path(settings.landing_uri)
    if landing.exists() and any(landing.iterdir()):
        if not (landing / SAMPLE_MARKER).exists():
            raise ValueError(
                f"{landing} holds data sample-data did not write; set REPLAY_LANDING_URI elsewhere"
            )
        shutil.rmtree(landing)  # a previous demo's landing zone: rewrite it for the current days
    counts = write_sample_landing_zone(landing, days=args.days, end_date=end, seed=args.seed)
    print(f"sample landing zone {settings.landing_uri}: {counts}")
    _run_backfill(start, end, None, None)
    conn = connect(warehouse=settings.warehouse_uri)
    warehouse = warehouse_root(settings.warehouse_uri)
    print(f"\nwarehouse {settings.warehouse_uri}:")
    for (name,) in conn.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
    ).fetchall():
        # Partition files, not distinct dates in rows: a day with nothing (no SC2 replays) is still written.
        partitions = len(available_partitions(warehouse, name))
        (rows,) = conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()
        print(f"  {name:<28} {partitions:>3} partitions {rows:>10} rows")
    return 0


def _cmd_export_tmrl(args: argparse.Namespace) -> int:
    from replay_assets.sources.tmrl.export import export_tmrl_memory

    summary = export_tmrl_memory(
        Path(args.out),
        args.memory,
        warehouse=args.warehouse,
        start_date=args.start_date,
        end_date=args.end_date,
        max_samples=args.max_samples,
        overwrite=args.overwrite,
        dry_run=args.dry_run,
    )
    print(summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replay-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser(
        "sample-data", help="write a demo landing zone with the project's own writers"
    )
    sample.add_argument("dir", help="landing zone folder to write")
    sample.add_argument("--days", type=int, default=3, help="number of UTC days (default 3)")
    sample.add_argument("--end-date", type=_date, help="last day (default yesterday, UTC)")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=_cmd_sample_data)

    query = commands.add_parser("query", help="run DuckDB SQL; every asset is a view over the warehouse")
    query.add_argument("sql")
    query.add_argument("--warehouse", help="warehouse URI (default REPLAY_WAREHOUSE_URI)")
    query.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    query.add_argument("--max-rows", type=int, default=40)
    query.set_defaults(func=_cmd_query)

    back = commands.add_parser("backfill", help="materialize a range of days as one Dagster backfill")
    back.add_argument("--all", action="store_true", help="from the earliest landed day")
    back.add_argument("--start-date", type=_date)
    back.add_argument("--end-date", type=_date, help="last day (default yesterday, UTC)")
    back.add_argument("--select", help="comma-separated asset keys (default: every asset)")
    back.add_argument("--webserver", help="URL of a running dagster webserver, e.g. http://127.0.0.1:3000")
    back.set_defaults(func=_cmd_backfill)

    export = commands.add_parser("export-tmrl", help="write tmrl's own data.pkl from tmrl_demo_buffers")
    export.add_argument(
        "--memory", choices=["lidar", "full"], required=True, help="MemoryTMLidar or MemoryTMFull"
    )
    export.add_argument("--out", required=True, help="the data.pkl to write")
    export.add_argument("--warehouse", help="warehouse URI (default REPLAY_WAREHOUSE_URI)")
    export.add_argument("--start-date", type=_date)
    export.add_argument("--end-date", type=_date)
    export.add_argument("--max-samples", type=int, help="keep only the newest N samples")
    export.add_argument("--overwrite", action="store_true", help="replace an existing file")
    export.add_argument("--dry-run", action="store_true", help="validate and count, write nothing")
    export.set_defaults(func=_cmd_export_tmrl)

    demo = commands.add_parser("demo", help="sample data, every asset for those days, a summary")
    demo.add_argument("--days", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import duckdb

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ReplayAssetsError, ValueError, duckdb.Error) as exc:
        print(f"replay-assets: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
