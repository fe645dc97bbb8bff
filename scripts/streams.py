#!/usr/bin/env python3
"""`make streams`: plays Lambda's event source mappings and schedules on this machine.

It reads the DynamoDB stream events (`Type: DynamoDB`, and `AWS::Lambda::EventSourceMapping`
resources) and the schedules (`Type: Schedule` / `ScheduleV2`) of template.yaml, polls the
streams of the tables at AWS_ENDPOINT_URL_DYNAMODB, and invokes the functions through the
Lambda Invoke API at AWS_ENDPOINT_URL_LAMBDA (`cargo lambda watch`), batch by batch as Lambda
does, until SIGINT or SIGTERM. Each delivery is logged as one JSON line on stdout.

    streams.py [--template template.yaml] [--poll-interval 0.25]
    streams.py --plan        print what it would poll and invoke, as JSON, and exit

Environment: that of `make tables` (AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION, credentials,
KV_BUCKETS_TABLE, KV_ITEMS_TABLE) plus AWS_ENDPOINT_URL_LAMBDA. Needs boto3 and PyYAML
(`make tools`). The README's "Change stream" section says what differs from AWS.
"""

import argparse
import base64
import datetime
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The tables' names when their environment variable is unset: the functions' own defaults
# (shared/src/model/config.rs); dev/tests/it/streams.rs checks the two agree through `--plan`.
DEFAULT_TABLE_NAMES = {"KV_BUCKETS_TABLE": "kv-buckets", "KV_ITEMS_TABLE": "kv-items"}

# Lambda's limits for DynamoDB stream event source mappings.
MAX_BATCH_SIZE = 10_000
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
GET_RECORDS_LIMIT = 1000
# How often the shard list is read again (new shards after a split, a re-created table).
DESCRIBE_INTERVAL = 1.0
# The first invocation of a function under `cargo lambda watch` compiles it.
INVOKE_TIMEOUT = 900
# An asynchronous (scheduled) invocation that fails is retried twice, as Lambda does.
SCHEDULE_RETRIES = 2
ACCOUNT = "000000000000"

MISSING = object()


class ConfigError(Exception):
    """The template asks for something this runner (or Lambda) does not accept."""


# ------------------------------------------------------------------------------------ logging

_log_lock = threading.Lock()


def log(event, **fields):
    """One JSON line on stdout per event."""
    line = json.dumps({"event": event, **fields}, default=str)
    with _log_lock:
        print(line, flush=True)


# ------------------------------------------------------------------------------------ template


def load_template(path):
    import yaml  # PyYAML (installed with cfn-lint by `make tools`)

    class CfnLoader(yaml.SafeLoader):
        """Reads CloudFormation's short-form tags as their long form (`!Ref X` -> {"Ref": X})."""

    def construct(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if suffix == "Ref":
            return {"Ref": value}
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {f"Fn::{suffix}": value}

    CfnLoader.add_multi_constructor("!", construct)
    with open(path) as handle:
        return yaml.load(handle, Loader=CfnLoader)


@dataclass
class StreamSource:
    """One DynamoDB stream event source mapping."""

    name: str  # FunctionLogicalId.EventName, or the mapping's logical id
    function: str  # the binary `cargo lambda watch` serves
    table: str  # the table's physical name
    starting_position: str = "TRIM_HORIZON"
    batch_size: int = 100
    batching_window: float = 0.0
    max_retries: int = -1  # -1: until the record expires
    max_record_age: int = -1  # seconds; -1: until the record expires
    bisect: bool = False
    report_failures: bool = False
    parallelization: int = 1
    destination: str = None  # the on-failure destination, as the template names it
    filters: list = field(default_factory=list)  # parsed patterns; a record passes if any matches


@dataclass
class ScheduleSource:
    name: str
    function: str
    expression: str  # rate(...) or cron(...)
    payload: object = None  # the event's fixed Input; None: EventBridge's scheduled event
    kind: str = "Schedule"


def describe_intrinsic(value):
    """A readable form of a template value (`!GetAtt Queue.Arn`) for logs."""
    if isinstance(value, dict) and len(value) == 1:
        (key, argument), = value.items()
        if key == "Fn::GetAtt" and isinstance(argument, list):
            return "!GetAtt " + ".".join(map(str, argument))
        if key == "Ref":
            return f"!Ref {argument}"
        if key.startswith("Fn::"):
            return f"!{key[4:]} {json.dumps(argument)}"
    return value if isinstance(value, str) else json.dumps(value)


def table_names(template, environ):
    """Table logical id -> physical name, through the functions' environment variables."""
    resources = template.get("Resources", {})
    variables = dict(template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    for resource in resources.values():
        if resource.get("Type") == "AWS::Serverless::Function":
            variables.update((resource.get("Properties") or {}).get("Environment", {}).get("Variables", {}))
    names = {}
    for logical, resource in resources.items():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        named_by = [var for var, value in variables.items() if value == {"Ref": logical}]
        name = next((environ.get(var) for var in named_by if environ.get(var)), None)
        name = name or next((DEFAULT_TABLE_NAMES[var] for var in named_by if var in DEFAULT_TABLE_NAMES), None)
        name = name or (resource.get("Properties") or {}).get("TableName")
        if isinstance(name, str):
            names[logical] = name
    return names


def stream_table(value, tables, where):
    """The physical table name of a mapping's stream: `!GetAtt Table.StreamArn` or an ARN."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical, attribute = value["Fn::GetAtt"]
        if attribute != "StreamArn":
            raise ConfigError(f"{where}: Stream must be a table's StreamArn, got {describe_intrinsic(value)}")
        if logical not in tables:
            raise ConfigError(
                f"{where}: no name for table {logical}: give it a TableName or name it in a "
                f"function's environment (one of {', '.join(DEFAULT_TABLE_NAMES)})"
            )
        return tables[logical]
    if isinstance(value, str) and ":table/" in value:
        return value.split(":table/", 1)[1].split("/", 1)[0]
    raise ConfigError(f"{where}: unsupported Stream {describe_intrinsic(value)}")


def integer(properties, key, default, low, high, where):
    value = properties.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}: {key} must be an integer from {low} to {high}, got {value!r}")
    return value


def stream_source(name, function, properties, tables):
    where = name
    position = properties.get("StartingPosition")
    if position not in ("TRIM_HORIZON", "LATEST"):
        raise ConfigError(f"{where}: StartingPosition must be TRIM_HORIZON or LATEST, got {position!r}")
    response_types = properties.get("FunctionResponseTypes") or []
    unknown = [kind for kind in response_types if kind != "ReportBatchItemFailures"]
    if unknown:
        raise ConfigError(f"{where}: unsupported FunctionResponseTypes {unknown}")
    if properties.get("TumblingWindowInSeconds"):
        raise ConfigError(f"{where}: TumblingWindowInSeconds is not supported by make streams")
    max_age = integer(properties, "MaximumRecordAgeInSeconds", -1, -1, 604_800, where)
    if 0 <= max_age < 60:
        raise ConfigError(f"{where}: MaximumRecordAgeInSeconds must be -1 or 60 to 604800")
    destination = ((properties.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
    filters = []
    for entry in (properties.get("FilterCriteria") or {}).get("Filters") or []:
        try:
            pattern = json.loads(entry["Pattern"])
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{where}: a filter's Pattern is not JSON: {error}") from None
        try:
            validate_pattern(pattern)
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None
        filters.append(pattern)
    if len(filters) > 5:
        raise ConfigError(f"{where}: at most 5 filters, got {len(filters)}")
    return StreamSource(
        name=name,
        function=function,
        table=stream_table(properties.get("Stream", properties.get("EventSourceArn")), tables, where),
        starting_position=position,
        batch_size=integer(properties, "BatchSize", 100, 1, MAX_BATCH_SIZE, where),
        batching_window=integer(properties, "MaximumBatchingWindowInSeconds", 0, 0, 300, where),
        max_retries=integer(properties, "MaximumRetryAttempts", -1, -1, 10_000, where),
        max_record_age=max_age,
        bisect=bool(properties.get("BisectBatchOnFunctionError", False)),
        report_failures="ReportBatchItemFailures" in response_types,
        parallelization=integer(properties, "ParallelizationFactor", 1, 1, 10, where),
        destination=describe_intrinsic(destination) if destination is not None else None,
        filters=filters,
    )


def enabled(properties):
    if properties.get("Enabled") is False or str(properties.get("Enabled")).lower() == "false":
        return False
    return str(properties.get("State", "ENABLED")).upper() != "DISABLED"


def read_sources(template, environ):
    """(stream sources, schedules) of the template, the tables named as `environ` names them."""
    resources = template.get("Resources", {})
    tables = table_names(template, environ)

    def binary(logical, where):
        resource = resources.get(logical) or {}
        name = ((resource.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
        if not name:
            raise ConfigError(f"{where}: function {logical} has no Metadata.BuildProperties.Binary")
        return name

    streams, schedules = [], []
    for logical, resource in resources.items():
        kind = resource.get("Type")
        properties = resource.get("Properties") or {}
        if kind == "AWS::Serverless::Function":
            for event_name, event in (properties.get("Events") or {}).items():
                event_properties = event.get("Properties") or {}
                name = f"{logical}.{event_name}"
                if not enabled(event_properties):
                    continue
                if event.get("Type") == "DynamoDB":
                    streams.append(stream_source(name, binary(logical, name), event_properties, tables))
                elif event.get("Type") in ("Schedule", "ScheduleV2"):
                    expression = event_properties.get("Schedule") or event_properties.get("ScheduleExpression")
                    parse_schedule(expression)  # refuses what it cannot play
                    payload = event_properties.get("Input")
                    if payload is not None:
                        payload = json.loads(payload)
                    elif event.get("Type") == "ScheduleV2":
                        payload = {}
                    schedules.append(ScheduleSource(
                        name=event_properties.get("Name") or name, function=binary(logical, name),
                        expression=expression, payload=payload, kind=event["Type"],
                    ))
        elif kind == "AWS::Lambda::EventSourceMapping":
            source = properties.get("EventSourceArn")
            is_dynamodb = (isinstance(source, dict) and "Fn::GetAtt" in source and source["Fn::GetAtt"][1] == "StreamArn") \
                or (isinstance(source, str) and ":dynamodb:" in source)
            if not is_dynamodb or not enabled(properties):
                continue
            target = properties.get("FunctionName")
            if isinstance(target, dict):
                target = target.get("Ref") or (target.get("Fn::GetAtt") or [None])[0]
            streams.append(stream_source(logical, binary(target, logical), properties, tables))
    return streams, schedules


# ------------------------------------------------------------------------------------ filters
#
# The EventBridge pattern subset Lambda accepts in FilterCriteria, matched against the record
# as the function would receive it: an object's keys are all required; an array lists the
# accepted values of a leaf (any may match; a leaf that is an array matches if any element
# does); `$or` lists alternative patterns.

OPERATORS = {"prefix", "suffix", "equals-ignore-case", "anything-but", "numeric", "exists", "wildcard"}


def validate_pattern(pattern, path="pattern"):
    if not isinstance(pattern, dict):
        raise ValueError(f"{path} must be an object")
    for key, rule in pattern.items():
        if key == "$or":
            if not isinstance(rule, list) or len(rule) < 2:
                raise ValueError(f"{path}.$or must list at least two patterns")
            for index, inner in enumerate(rule):
                validate_pattern(inner, f"{path}.$or[{index}]")
        elif isinstance(rule, dict):
            validate_pattern(rule, f"{path}.{key}")
        elif isinstance(rule, list):
            for item in rule:
                if isinstance(item, dict):
                    if len(item) != 1 or next(iter(item)) not in OPERATORS:
                        raise ValueError(f"{path}.{key}: unsupported filter rule {json.dumps(item)}")
                    if "numeric" in item:
                        numeric_pairs(item["numeric"])
                elif isinstance(item, list):
                    raise ValueError(f"{path}.{key}: nested arrays are not a filter rule")
        else:
            raise ValueError(f"{path}.{key} must be an object or an array of rules")


def numeric_pairs(spec):
    if not isinstance(spec, list) or not spec or len(spec) % 2 or len(spec) > 4:
        raise ValueError(f"numeric rule {json.dumps(spec)} must be one or two (operator, number) pairs")
    pairs = list(zip(spec[::2], spec[1::2]))
    for operator, number in pairs:
        if operator not in ("=", "<", "<=", ">", ">=") or not is_number(number):
            raise ValueError(f"numeric rule {json.dumps(spec)}: bad pair {operator!r}, {number!r}")
    return pairs


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same(a, b):
    """JSON equality: 1 is not true, "1" is not 1."""
    if is_number(a) and is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def wildcard(pattern, text):
    parts = pattern.split("*")
    if len(parts) == 1:
        return text == pattern
    if not text.startswith(parts[0]) or not text.endswith(parts[-1]) or len(text) < len(parts[0]) + len(parts[-1]):
        return False
    position = len(parts[0])
    end = len(text) - len(parts[-1])
    for middle in parts[1:-1]:
        found = text.find(middle, position, end)
        if found < 0:
            return False
        position = found + len(middle)
    return True


def rule_matches(rule, value):
    if not isinstance(rule, dict):
        return same(rule, value)
    (operator, argument), = rule.items()
    if operator == "exists":
        return argument is True and not isinstance(value, dict)
    if operator == "prefix":
        return isinstance(value, str) and value.startswith(argument)
    if operator == "suffix":
        return isinstance(value, str) and value.endswith(argument)
    if operator == "equals-ignore-case":
        return isinstance(value, str) and value.lower() == argument.lower()
    if operator == "wildcard":
        return isinstance(value, str) and wildcard(argument, value)
    if operator == "numeric":
        if not is_number(value):
            return False
        checks = {"=": value.__eq__, "<": value.__lt__, "<=": value.__le__, ">": value.__gt__, ">=": value.__ge__}
        return all(checks[operator](number) for operator, number in numeric_pairs(argument))
    if operator == "anything-but":
        if isinstance(argument, dict):
            return not rule_matches(argument, value) if isinstance(value, str) else False
        excluded = argument if isinstance(argument, list) else [argument]
        return not any(same(item, value) for item in excluded)
    raise ValueError(f"unsupported filter rule {rule}")


def leaf_matches(rules, value):
    if value is MISSING:
        return any(rule == {"exists": False} for rule in rules)
    values = value if isinstance(value, list) else [value]
    return any(rule_matches(rule, item) for rule in rules if rule != {"exists": False} for item in values)


def pattern_matches(pattern, data):
    for key, rule in pattern.items():
        if key == "$or":
            if not any(pattern_matches(inner, data) for inner in rule):
                return False
            continue
        value = data.get(key, MISSING) if isinstance(data, dict) else MISSING
        if isinstance(rule, dict):
            if not pattern_matches(rule, value if isinstance(value, dict) else {}):
                return False
        elif not leaf_matches(rule, value):
            return False
    return True


def passes(filters, record):
    return not filters or any(pattern_matches(pattern, record) for pattern in filters)


# ------------------------------------------------------------------------------------ records


def epoch_seconds(value):
    if isinstance(value, datetime.datetime):
        value = value.timestamp()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def attribute_json(value):
    """boto3's parsed attribute value back to the wire's JSON (binary as base64)."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {key: attribute_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [attribute_json(item) for item in value]
    return value


def lambda_record(raw, stream_arn, region):
    """A GetRecords record as Lambda puts it in a function's event."""
    stream = raw.get("dynamodb", {})
    dynamodb = {}
    for key in ("ApproximateCreationDateTime", "Keys", "NewImage", "OldImage", "SequenceNumber",
                "SizeBytes", "StreamViewType"):
        if key in stream:
            value = stream[key]
            dynamodb[key] = epoch_seconds(value) if key == "ApproximateCreationDateTime" else attribute_json(value)
    event_name = raw.get("eventName")
    identity = raw.get("userIdentity")
    if event_name not in ("INSERT", "MODIFY", "REMOVE"):
        # DynamoDB Local names its TTL deletions oddly; AWS sends them as REMOVE by the
        # DynamoDB service principal.
        event_name = "REMOVE"
        identity = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    record = {
        "eventID": raw.get("eventID"),
        "eventName": event_name,
        "eventVersion": raw.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": dynamodb,
    }
    if identity:
        record["userIdentity"] = {
            "type": identity.get("type", identity.get("Type")),
            "principalId": identity.get("principalId", identity.get("PrincipalId")),
        }
    record["eventSourceARN"] = stream_arn
    return record


def sequence(record):
    return record["dynamodb"]["SequenceNumber"]


def batches(records, batch_size):
    """Consecutive batches of at most batch_size records and Lambda's payload limit."""
    batch, size = [], len('{"Records": []}')
    for record in records:
        record_size = len(json.dumps(record)) + 2
        if batch and (len(batch) >= batch_size or size + record_size > MAX_PAYLOAD_BYTES):
            yield batch
            batch, size = [], len('{"Records": []}')
        batch.append(record)
        size += record_size
    if batch:
        yield batch


# ------------------------------------------------------------------------------------ invoking


class Unreachable(Exception):
    """The Invoke API did not answer with an outcome of the function (not a function error)."""


def http_invoker(endpoint, timeout=INVOKE_TIMEOUT):
    """invoke(function, payload) -> ("ok", result) or ("error", {"errorType", "errorMessage"})."""
    base = endpoint.rstrip("/")

    def invoke(function, payload):
        request = urllib.request.Request(
            f"{base}/2015-03-31/functions/{function}/invocations",
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "X-Amz-Invocation-Type": "RequestResponse"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
                function_error = response.headers.get("X-Amz-Function-Error")
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                failure = json.loads(body)
            except ValueError:
                failure = None
            if error.code >= 500 and isinstance(failure, dict) and "errorType" in failure:
                return "error", failure
            raise Unreachable(f"HTTP {error.code}: {body[:300]!r}") from None
        except (urllib.error.URLError, OSError) as error:
            raise Unreachable(str(getattr(error, "reason", error))) from None
        try:
            result = json.loads(body) if body.strip() else None
        except ValueError:
            return "error", {"errorType": "InvalidResponse", "errorMessage": body[:300].decode(errors="replace")}
        if function_error:
            return "error", result if isinstance(result, dict) else {"errorType": function_error}
        return "ok", result

    return invoke


def first_failure(response, batch):
    """With ReportBatchItemFailures: None (all done), an index to retry from, or "invalid"."""
    if response is None:
        return None
    if not isinstance(response, dict):
        return "invalid"
    failures = response.get("batchItemFailures")
    if not failures:
        return None
    if not isinstance(failures, list):
        return "invalid"
    positions = {sequence(record): index for index, record in enumerate(batch)}
    indexes = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in positions:
            return "invalid"
        indexes.append(positions[identifier])
    return min(indexes)


# ------------------------------------------------------------------------------------ delivery


def iso(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Delivery:
    """Invokes one mapping's function with the records of one shard, in order, with Lambda's
    error handling: retries, bisection, partial batch failures, record age, on-failure."""

    def __init__(self, source, stream_arn, invoke, stop, region="us-east-1", sleep=None, now=time.time):
        self.source = source
        self.stream_arn = stream_arn
        self.invoke = invoke
        self.stop = stop
        self.region = region
        self.sleep = sleep or (lambda seconds: stop.wait(seconds))
        self.now = now

    def backoff(self, retries):
        return min(0.2 * 2 ** retries, 5.0)

    def deliver(self, shard_id, records):
        """Delivers `records` in batches; returns False if stopped before the end."""
        for batch in batches(records, self.source.batch_size):
            if not self.deliver_batch(shard_id, batch):
                return False
        return True

    def deliver_batch(self, shard_id, batch):
        source = self.source
        work = [(batch, 0)]  # (records, retries used); bisection does not use retries
        invokes = 0
        while work:
            if self.stop.is_set():
                return False
            records, retries = work.pop(0)
            if source.max_record_age >= 0:
                oldest_allowed = self.now() - source.max_record_age
                expired = [r for r in records if r["dynamodb"].get("ApproximateCreationDateTime", oldest_allowed) < oldest_allowed]
                if expired:
                    self.on_failure(shard_id, expired, "RecordAgeExceeded", invokes, None)
                    records = [r for r in records if r not in expired]
                    if not records:
                        continue
            started = time.monotonic()
            try:
                outcome, result = self.invoke(source.function, {"Records": records})
            except Unreachable as error:
                # Not the function's error: retried without using the retry quota.
                self.log_delivery(shard_id, records, "unreachable", started, retries, error=str(error))
                work.insert(0, (records, retries))
                self.sleep(max(1.0, self.backoff(retries)))
                continue
            invokes += 1
            failed_from = None
            if outcome == "ok" and source.report_failures:
                failed_from = first_failure(result, records)
                if failed_from == "invalid":
                    outcome, result = "error", {"errorType": "InvalidBatchItemFailures",
                                                "errorMessage": json.dumps(result)[:300]}
                    failed_from = None
            if outcome == "ok" and failed_from is None:
                self.log_delivery(shard_id, records, "ok", started, retries)
                continue
            if outcome == "ok":
                # A partial failure: the records from the first failed one on are retried.
                remaining = records[failed_from:]
                self.log_delivery(shard_id, records, "partial", started, retries, retry_from=sequence(remaining[0]))
                if 0 <= source.max_retries <= retries:
                    self.on_failure(shard_id, remaining, "RetryAttemptsExhausted", invokes, None)
                else:
                    self.sleep(self.backoff(retries))
                    work.insert(0, (remaining, retries + 1))
                continue
            error = f"{result.get('errorType')}: {result.get('errorMessage', '')}" if isinstance(result, dict) else str(result)
            self.log_delivery(shard_id, records, "error", started, retries, error=error[:500])
            if source.bisect and len(records) > 1:
                half = len(records) // 2
                work[0:0] = [(records[:half], retries), (records[half:], retries)]
            elif 0 <= source.max_retries <= retries:
                self.on_failure(shard_id, records, "RetryAttemptsExhausted", invokes, "Unhandled")
            else:
                self.sleep(self.backoff(retries))
                work.insert(0, (records, retries + 1))
        return True

    def log_delivery(self, shard_id, records, outcome, started, retries, **extra):
        log("delivery", source=self.source.name, function=self.source.function, shard=shard_id,
            records=len(records), first=sequence(records[0]), last=sequence(records[-1]),
            outcome=outcome, retry=retries, ms=round((time.monotonic() - started) * 1000), **extra)

    def on_failure(self, shard_id, records, condition, invokes, function_error):
        """What Lambda sends the on-failure destination, logged as one line (dropped if none)."""
        times = [r["dynamodb"].get("ApproximateCreationDateTime") for r in records]
        times = [t for t in times if is_number(t)]
        log(
            "on-failure",
            source=self.source.name,
            function=self.source.function,
            destination=self.source.destination,
            requestContext={
                "requestId": str(uuid.uuid4()),
                "functionArn": f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{self.source.function}",
                "condition": condition,
                "approximateInvokeCount": invokes,
            },
            responseContext={"statusCode": 200, "executedVersion": "$LATEST",
                             **({"functionError": function_error} if function_error else {})},
            version="1.0",
            timestamp=iso(self.now()),
            DDBStreamBatchInfo={
                "shardId": shard_id,
                "startSequenceNumber": sequence(records[0]),
                "endSequenceNumber": sequence(records[-1]),
                "approximateArrivalOfFirstRecord": iso(min(times)) if times else None,
                "approximateArrivalOfLastRecord": iso(max(times)) if times else None,
                "batchSize": len(records),
                "streamArn": self.stream_arn,
            },
        )


def lanes(records, factor, hash_key):
    """ParallelizationFactor: records split by partition key, each key's order kept."""
    if factor <= 1:
        return [records]
    split = [[] for _ in range(factor)]
    for record in records:
        key = json.dumps(record["dynamodb"].get("Keys", {}).get(hash_key), sort_keys=True)
        split[zlib.crc32(key.encode()) % factor].append(record)
    return [lane for lane in split if lane]


# ------------------------------------------------------------------------------------ polling


def error_code(error):
    response = getattr(error, "response", None)
    return (response or {}).get("Error", {}).get("Code") if isinstance(response, dict) else None


@dataclass
class ShardState:
    parent: str = None
    ended_at_start: bool = False
    started: bool = False
    finished: bool = False


class Mapping:
    """One event source mapping: follows its table's stream, one worker thread per shard."""

    def __init__(self, source, dynamodb, streams, invoke, stop, region, poll_interval=0.25,
                 describe_interval=DESCRIBE_INTERVAL, sleep=None):
        self.source = source
        self.dynamodb = dynamodb
        self.streams = streams
        self.invoke = invoke
        self.stop = stop
        self.region = region
        self.poll_interval = poll_interval
        self.describe_interval = describe_interval
        self.sleep = sleep
        self.stream_arn = None
        self.hash_key = None
        self.shards = {}
        self.threads = []
        self.first_stream = True  # the stream of the table when we started (not a re-created one)
        self.initial = True  # the first listing of this stream's shards is still to come

    def run(self):
        waiting_logged = False
        while not self.stop.is_set():
            try:
                table = self.dynamodb.describe_table(TableName=self.source.table)["Table"]
                arn = table.get("LatestStreamArn")
                if not arn or table.get("StreamSpecification", {}).get("StreamEnabled") is False:
                    raise LookupError(f"table {self.source.table} has no stream")
                if arn != self.stream_arn:
                    if self.stream_arn is not None:
                        log("stream-changed", source=self.source.name, stream=arn)
                        self.first_stream = False
                    self.stream_arn = arn
                    self.shards = {}
                    self.initial = True
                    self.hash_key = next((k["AttributeName"] for k in table.get("KeySchema", []) if k["KeyType"] == "HASH"), None)
                    log("following", source=self.source.name, function=self.source.function,
                        table=self.source.table, stream=arn)
                waiting_logged = False
                self.follow_shards()
            except Exception as error:  # noqa: BLE001 - a poller must outlive any one failure
                if error_code(error) == "ResourceNotFoundException" or isinstance(error, LookupError):
                    if not waiting_logged:
                        log("waiting", source=self.source.name, table=self.source.table, reason=str(error)[:300])
                        waiting_logged = True
                else:
                    log("error", source=self.source.name, where="describe", error=str(error)[:500])
            self.stop.wait(self.describe_interval)

    def list_shards(self):
        shards, start = [], None
        while True:
            arguments = {"StreamArn": self.stream_arn}
            if start:
                arguments["ExclusiveStartShardId"] = start
            description = self.streams.describe_stream(**arguments)["StreamDescription"]
            shards += description.get("Shards", [])
            start = description.get("LastEvaluatedShardId")
            if not start:
                return shards

    def follow_shards(self):
        arn = self.stream_arn
        listed = self.list_shards()
        for shard in listed:
            if shard["ShardId"] not in self.shards:
                ended = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
                state = ShardState(parent=shard.get("ParentShardId"), ended_at_start=ended)
                if self.initial and self.first_stream and self.source.starting_position == "LATEST" and ended:
                    state.finished = True  # already closed when we started: all in the past
                self.shards[shard["ShardId"]] = state
        at_start = self.initial
        self.initial = False
        for shard_id, state in list(self.shards.items()):
            if state.started or state.finished:
                continue
            parent = self.shards.get(state.parent) if state.parent else None
            if parent is not None and not parent.finished:
                continue  # children after their parent, as Lambda does
            state.started = True
            position = self.source.starting_position if (at_start and self.first_stream) else "TRIM_HORIZON"
            worker = ShardWorker(self, arn, shard_id, state, position)
            thread = threading.Thread(target=worker.run, name=f"{self.source.name}:{shard_id}", daemon=True)
            self.threads.append(thread)
            thread.start()


class ShardWorker:
    def __init__(self, mapping, stream_arn, shard_id, state, position):
        self.mapping = mapping
        self.source = mapping.source
        self.stream_arn = stream_arn
        self.shard_id = shard_id
        self.state = state
        self.position = position
        self.last_read = None
        self.delivery = Delivery(mapping.source, stream_arn, mapping.invoke, mapping.stop, mapping.region,
                                 sleep=mapping.sleep)

    def iterator(self):
        arguments = {"StreamArn": self.stream_arn, "ShardId": self.shard_id}
        if self.last_read:
            arguments.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=self.last_read)
        else:
            arguments.update(ShardIteratorType=self.position)
        return self.mapping.streams.get_shard_iterator(**arguments)["ShardIterator"]

    def run(self):
        stop = self.mapping.stop
        pending = []  # (record, read at): read, passed the filters, not yet delivered
        iterator = None
        ended = False
        failures = 0
        while not stop.is_set():
            read_any = False
            if not ended:
                try:
                    if iterator is None:
                        iterator = self.iterator()
                    response = self.mapping.streams.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
                    failures = 0
                    iterator = response.get("NextShardIterator")
                    ended = iterator is None
                    now = time.monotonic()
                    for raw in response.get("Records", []):
                        read_any = True
                        record = lambda_record(raw, self.stream_arn, self.mapping.region)
                        self.last_read = sequence(record)
                        if passes(self.source.filters, record):
                            pending.append((record, now))
                except Exception as error:  # noqa: BLE001
                    code = error_code(error)
                    iterator = None
                    if code in ("TrimmedDataAccessException", "ExpiredIteratorException"):
                        # DynamoDB Local also says Trimmed for a shard without records yet: the
                        # iterator is taken again (after the last record read, if any).
                        stop.wait(self.mapping.poll_interval)
                        continue
                    if code == "ResourceNotFoundException":
                        log("shard-gone", source=self.source.name, shard=self.shard_id)
                        ended = True
                    else:
                        failures += 1
                        log("error", source=self.source.name, shard=self.shard_id, where="get-records", error=str(error)[:500])
                        stop.wait(min(0.5 * 2 ** failures, 10))
                        continue
            if pending and (ended or self.ready(pending)):
                take = len(pending)
                if not ended and time.monotonic() - pending[0][1] < self.source.batching_window:
                    take -= take % self.source.batch_size  # whole batches now, the rest may grow
                records = [record for record, _ in pending[:take]]
                if not self.dispatch(records):
                    return
                del pending[:take]
            if ended and not pending:
                self.state.finished = True
                log("shard-done", source=self.source.name, shard=self.shard_id)
                return
            if not read_any:
                stop.wait(self.mapping.poll_interval)

    def ready(self, pending):
        if len(pending) >= self.source.batch_size:
            return True
        return time.monotonic() - pending[0][1] >= self.source.batching_window

    def dispatch(self, records):
        split = lanes(records, self.source.parallelization, self.mapping.hash_key)
        if len(split) == 1:
            return self.delivery.deliver(self.shard_id, split[0])
        # Up to ParallelizationFactor batches at once, one lane per group of partition keys.
        results = [False] * len(split)

        def deliver(index, lane):
            results[index] = self.delivery.deliver(self.shard_id, lane)

        threads = [threading.Thread(target=deliver, args=(index, lane), daemon=True) for index, lane in enumerate(split)]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                if self.mapping.stop.is_set():
                    return False
                thread.join(0.5)
        return all(results)


# ------------------------------------------------------------------------------------ schedules

UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}
MONTHS = {name: index + 1 for index, name in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
DAYS = {name: index + 1 for index, name in enumerate("SUN MON TUE WED THU FRI SAT".split())}
CRON_FIELDS = [(0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, MONTHS), (1, 7, DAYS), (1970, 2199, {})]


def parse_schedule(expression):
    """("rate", seconds) or ("cron", [set of allowed values per field])."""
    if not isinstance(expression, str):
        raise ConfigError(f"unsupported schedule {expression!r}")
    text = expression.strip()
    if text.startswith("rate(") and text.endswith(")"):
        parts = text[5:-1].split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) < 1 or parts[1] not in UNITS:
            raise ConfigError(f"unsupported schedule {expression!r}: rate(N minutes|hours|days)")
        return "rate", int(parts[0]) * UNITS[parts[1]]
    if text.startswith("cron(") and text.endswith(")"):
        fields = text[5:-1].split()
        if len(fields) != 6:
            raise ConfigError(f"{expression}: cron takes 6 fields (minutes hours day-of-month month day-of-week year)")
        allowed = []
        for value, (low, high, names) in zip(fields, CRON_FIELDS):
            allowed.append(cron_field(value, low, high, names, expression))
        return "cron", allowed
    raise ConfigError(f"unsupported schedule {expression!r}: rate(...) or cron(...)")


def cron_field(text, low, high, names, expression):
    if text in ("*", "?"):
        return None  # any
    values = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) < 1:
                raise ConfigError(f"{expression}: bad step in {text!r}")
            step = int(step_text)
        if part in ("*", ""):
            start, end = low, high
        elif "-" in part:
            start, end = (number(p, names, expression) for p in part.split("-", 1))
        else:
            start = number(part, names, expression)
            end = high if step > 1 else start
        if not low <= start <= end <= high:
            raise ConfigError(f"{expression}: {text!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def number(text, names, expression):
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise ConfigError(f"{expression}: unsupported cron value {text!r} (L, W and # are not supported)")
    return int(text)


def next_time(schedule, after):
    """The first firing strictly after `after` (epoch seconds, UTC)."""
    kind, spec = schedule
    if kind == "rate":
        return after + spec
    minutes, hours, days, months, weekdays, years = spec
    moment = datetime.datetime.fromtimestamp(after, datetime.timezone.utc).replace(second=0, microsecond=0)
    moment += datetime.timedelta(minutes=1)
    limit = moment + datetime.timedelta(days=366 * 5)
    while moment < limit:
        weekday = (moment.isoweekday() % 7) + 1  # SUN=1 .. SAT=7
        if (years is None or moment.year in years) and (months is None or moment.month in months) \
                and (days is None or moment.day in days) and (weekdays is None or weekday in weekdays):
            if hours is None or moment.hour in hours:
                if minutes is None or moment.minute in minutes:
                    return moment.timestamp()
                moment += datetime.timedelta(minutes=1)
            else:
                moment = moment.replace(minute=0) + datetime.timedelta(hours=1)
        else:
            moment = moment.replace(hour=0, minute=0) + datetime.timedelta(days=1)
    return None


def scheduled_event(schedule, fired_at, region):
    """EventBridge's event for a scheduled rule, or the rule's fixed Input."""
    if schedule.payload is not None:
        return schedule.payload
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": datetime.datetime.fromtimestamp(fired_at, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{ACCOUNT}:rule/{schedule.name}"],
        "detail": {},
    }


def run_schedule(schedule, invoke, stop, region, now=time.time):
    parsed = parse_schedule(schedule.expression)
    at = next_time(parsed, now())
    while at is not None and not stop.wait(max(0.0, at - now())):
        payload = scheduled_event(schedule, at, region)
        for attempt in range(SCHEDULE_RETRIES + 1):
            started = time.monotonic()
            try:
                outcome, result = invoke(schedule.function, payload)
            except Unreachable as error:
                outcome, result = "unreachable", {"errorMessage": str(error)}
            log("schedule", source=schedule.name, function=schedule.function, outcome=outcome, attempt=attempt + 1,
                ms=round((time.monotonic() - started) * 1000),
                **({} if outcome == "ok" else {"error": json.dumps(result)[:500]}))
            if outcome == "ok" or stop.wait(2 ** attempt):
                break
        at = next_time(parsed, at)
        if at is not None and at < now():  # the invocation outlasted the period: no catch-up burst
            at = now() if parsed[0] == "rate" else next_time(parsed, now())


# ------------------------------------------------------------------------------------ main


def plan(streams, schedules):
    return {
        "streams": [vars(source) for source in streams],
        "schedules": [vars(schedule) for schedule in schedules],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", default=str(ROOT / "template.yaml"))
    parser.add_argument("--poll-interval", type=float, default=0.25,
                        help="seconds between polls of an idle shard (Lambda: 4 polls a second)")
    parser.add_argument("--plan", action="store_true", help="print the mappings and schedules as JSON and exit")
    parser.add_argument("--only", default="",
                        help="comma-separated function names: serve only their mappings and schedules")
    args = parser.parse_args(argv)

    try:
        streams, schedules = read_sources(load_template(args.template), os.environ)
        if args.only:
            only = set(args.only.split(","))
            streams = [source for source in streams if source.function in only]
            schedules = [schedule for schedule in schedules if schedule.function in only]
    except ModuleNotFoundError as error:
        print(f"streams: {error.name} is missing: run `make tools`", file=sys.stderr)
        return 2
    except (ConfigError, OSError, ValueError) as error:
        print(f"streams: {args.template}: {error}", file=sys.stderr)
        return 2
    if args.plan:
        print(json.dumps(plan(streams, schedules), indent=2))
        return 0

    missing = [name for name in ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_LAMBDA") if not os.environ.get(name)]
    if missing:
        print(f"streams: set {' and '.join(missing)} (DynamoDB Local's and `cargo lambda watch`'s addresses)",
              file=sys.stderr)
        return 2
    try:
        import boto3
        from botocore.config import Config
    except ModuleNotFoundError as error:
        print(f"streams: {error.name} is missing: run `make tools`", file=sys.stderr)
        return 2

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = os.environ["AWS_ENDPOINT_URL_DYNAMODB"]
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30,
                    max_pool_connections=64)
    session = boto3.session.Session(region_name=region)
    dynamodb = session.client("dynamodb", endpoint_url=endpoint, config=config)
    streams_client = session.client("dynamodbstreams",
                                    endpoint_url=os.environ.get("AWS_ENDPOINT_URL_DYNAMODBSTREAMS") or endpoint,
                                    config=config)
    invoke = http_invoker(os.environ["AWS_ENDPOINT_URL_LAMBDA"])

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    log("started", lambda_endpoint=os.environ["AWS_ENDPOINT_URL_LAMBDA"], dynamodb_endpoint=endpoint,
        streams=[{"source": s.name, "function": s.function, "table": s.table, "batch_size": s.batch_size}
                 for s in streams],
        schedules=[{"source": s.name, "function": s.function, "schedule": s.expression} for s in schedules])
    threads = []
    for source in streams:
        mapping = Mapping(source, dynamodb, streams_client, invoke, stop, region, poll_interval=args.poll_interval)
        threads.append(threading.Thread(target=mapping.run, name=source.name, daemon=True))
    for schedule in schedules:
        threads.append(threading.Thread(target=run_schedule, args=(schedule, invoke, stop, region),
                                        name=schedule.name, daemon=True))
    for thread in threads:
        thread.start()
    while not stop.is_set():
        stop.wait(0.5)
    for thread in threads:
        thread.join(timeout=2)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
