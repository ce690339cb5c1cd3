from presculpt.v1 import model_pb2 as _model_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Resolution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOLUTION_AUTO: _ClassVar[Resolution]
    RESOLUTION_RAW: _ClassVar[Resolution]
    RESOLUTION_ROLLUP: _ClassVar[Resolution]
RESOLUTION_AUTO: Resolution
RESOLUTION_RAW: Resolution
RESOLUTION_ROLLUP: Resolution

class Host(_message.Message):
    __slots__ = ("id", "info", "connected", "last_seen", "vm_count", "latest", "pending_commands")
    ID_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    VM_COUNT_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    PENDING_COMMANDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    info: _model_pb2.HostInfo
    connected: bool
    last_seen: float
    vm_count: int
    latest: _model_pb2.HostSample
    pending_commands: int
    def __init__(self, id: _Optional[str] = ..., info: _Optional[_Union[_model_pb2.HostInfo, _Mapping]] = ..., connected: _Optional[bool] = ..., last_seen: _Optional[float] = ..., vm_count: _Optional[int] = ..., latest: _Optional[_Union[_model_pb2.HostSample, _Mapping]] = ..., pending_commands: _Optional[int] = ...) -> None: ...

class ListHostsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListHostsResponse(_message.Message):
    __slots__ = ("hosts",)
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    def __init__(self, hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ...) -> None: ...

class Vm(_message.Message):
    __slots__ = ("host", "info", "latest")
    HOST_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    host: str
    info: _model_pb2.VmInfo
    latest: _model_pb2.VmSample
    def __init__(self, host: _Optional[str] = ..., info: _Optional[_Union[_model_pb2.VmInfo, _Mapping]] = ..., latest: _Optional[_Union[_model_pb2.VmSample, _Mapping]] = ...) -> None: ...

class ListVmsRequest(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: str
    def __init__(self, host: _Optional[str] = ...) -> None: ...

class ListVmsResponse(_message.Message):
    __slots__ = ("vms",)
    VMS_FIELD_NUMBER: _ClassVar[int]
    vms: _containers.RepeatedCompositeFieldContainer[Vm]
    def __init__(self, vms: _Optional[_Iterable[_Union[Vm, _Mapping]]] = ...) -> None: ...

class Stat(_message.Message):
    __slots__ = ("min", "mean", "max")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    min: float
    mean: float
    max: float
    def __init__(self, min: _Optional[float] = ..., mean: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class Rollup(_message.Message):
    __slots__ = ("start", "duration_s", "count", "cpu_cores", "memory_mib", "memory_used_mib", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps")
    START_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_MIB_FIELD_NUMBER: _ClassVar[int]
    DISK_READ_BPS_FIELD_NUMBER: _ClassVar[int]
    DISK_WRITE_BPS_FIELD_NUMBER: _ClassVar[int]
    NET_RX_BPS_FIELD_NUMBER: _ClassVar[int]
    NET_TX_BPS_FIELD_NUMBER: _ClassVar[int]
    start: float
    duration_s: float
    count: int
    cpu_cores: Stat
    memory_mib: Stat
    memory_used_mib: Stat
    disk_read_bps: Stat
    disk_write_bps: Stat
    net_rx_bps: Stat
    net_tx_bps: Stat
    def __init__(self, start: _Optional[float] = ..., duration_s: _Optional[float] = ..., count: _Optional[int] = ..., cpu_cores: _Optional[_Union[Stat, _Mapping]] = ..., memory_mib: _Optional[_Union[Stat, _Mapping]] = ..., memory_used_mib: _Optional[_Union[Stat, _Mapping]] = ..., disk_read_bps: _Optional[_Union[Stat, _Mapping]] = ..., disk_write_bps: _Optional[_Union[Stat, _Mapping]] = ..., net_rx_bps: _Optional[_Union[Stat, _Mapping]] = ..., net_tx_bps: _Optional[_Union[Stat, _Mapping]] = ...) -> None: ...

class GetVmHistoryRequest(_message.Message):
    __slots__ = ("vm", "host", "start", "end", "resolution", "limit")
    VM_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    vm: str
    host: str
    start: float
    end: float
    resolution: Resolution
    limit: int
    def __init__(self, vm: _Optional[str] = ..., host: _Optional[str] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., resolution: _Optional[_Union[Resolution, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class GetVmHistoryResponse(_message.Message):
    __slots__ = ("host", "vm", "samples", "rollups")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ROLLUPS_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm: _model_pb2.VmInfo
    samples: _containers.RepeatedCompositeFieldContainer[_model_pb2.VmSample]
    rollups: _containers.RepeatedCompositeFieldContainer[Rollup]
    def __init__(self, host: _Optional[str] = ..., vm: _Optional[_Union[_model_pb2.VmInfo, _Mapping]] = ..., samples: _Optional[_Iterable[_Union[_model_pb2.VmSample, _Mapping]]] = ..., rollups: _Optional[_Iterable[_Union[Rollup, _Mapping]]] = ...) -> None: ...

class ResizeVmRequest(_message.Message):
    __slots__ = ("vm", "host", "target", "timeout_s", "command_id", "reason")
    VM_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    vm: str
    host: str
    target: _model_pb2.Shape
    timeout_s: float
    command_id: str
    reason: str
    def __init__(self, vm: _Optional[str] = ..., host: _Optional[str] = ..., target: _Optional[_Union[_model_pb2.Shape, _Mapping]] = ..., timeout_s: _Optional[float] = ..., command_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResizeVmResponse(_message.Message):
    __slots__ = ("host", "command_id", "outcome")
    HOST_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    host: str
    command_id: str
    outcome: _model_pb2.CommandOutcome
    def __init__(self, host: _Optional[str] = ..., command_id: _Optional[str] = ..., outcome: _Optional[_Union[_model_pb2.CommandOutcome, _Mapping]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: str
    def __init__(self, host: _Optional[str] = ...) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("connected", "message")
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    connected: bool
    message: str
    def __init__(self, connected: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class MetricsStored(_message.Message):
    __slots__ = ("seq", "vms", "host_sample")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    HOST_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    vms: _containers.RepeatedCompositeFieldContainer[_model_pb2.VmSample]
    host_sample: _model_pb2.HostSample
    def __init__(self, seq: _Optional[int] = ..., vms: _Optional[_Iterable[_Union[_model_pb2.VmSample, _Mapping]]] = ..., host_sample: _Optional[_Union[_model_pb2.HostSample, _Mapping]] = ...) -> None: ...

class ForecastAnomaly(_message.Message):
    __slots__ = ("vm", "uuid", "metric", "direction", "quantile", "model", "ts", "actual", "bound")
    VM_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    BOUND_FIELD_NUMBER: _ClassVar[int]
    vm: str
    uuid: str
    metric: str
    direction: str
    quantile: float
    model: str
    ts: _containers.RepeatedScalarFieldContainer[float]
    actual: _containers.RepeatedScalarFieldContainer[float]
    bound: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, vm: _Optional[str] = ..., uuid: _Optional[str] = ..., metric: _Optional[str] = ..., direction: _Optional[str] = ..., quantile: _Optional[float] = ..., model: _Optional[str] = ..., ts: _Optional[_Iterable[float]] = ..., actual: _Optional[_Iterable[float]] = ..., bound: _Optional[_Iterable[float]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("ts", "host", "metrics", "command", "outcome", "agent", "anomaly", "unmet")
    TS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_FIELD_NUMBER: _ClassVar[int]
    UNMET_FIELD_NUMBER: _ClassVar[int]
    ts: float
    host: str
    metrics: MetricsStored
    command: _model_pb2.Command
    outcome: _model_pb2.CommandOutcome
    agent: AgentStatus
    anomaly: ForecastAnomaly
    unmet: UnmetDemand
    def __init__(self, ts: _Optional[float] = ..., host: _Optional[str] = ..., metrics: _Optional[_Union[MetricsStored, _Mapping]] = ..., command: _Optional[_Union[_model_pb2.Command, _Mapping]] = ..., outcome: _Optional[_Union[_model_pb2.CommandOutcome, _Mapping]] = ..., agent: _Optional[_Union[AgentStatus, _Mapping]] = ..., anomaly: _Optional[_Union[ForecastAnomaly, _Mapping]] = ..., unmet: _Optional[_Union[UnmetDemand, _Mapping]] = ...) -> None: ...

class GetForecastRequest(_message.Message):
    __slots__ = ("vm", "host", "since_s", "lead_steps")
    VM_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    SINCE_S_FIELD_NUMBER: _ClassVar[int]
    LEAD_STEPS_FIELD_NUMBER: _ClassVar[int]
    vm: str
    host: str
    since_s: float
    lead_steps: int
    def __init__(self, vm: _Optional[str] = ..., host: _Optional[str] = ..., since_s: _Optional[float] = ..., lead_steps: _Optional[int] = ...) -> None: ...

class MetricForecast(_message.Message):
    __slots__ = ("metric", "ts", "steps")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    metric: str
    ts: _containers.RepeatedScalarFieldContainer[float]
    steps: _containers.RepeatedCompositeFieldContainer[QuantileValues]
    def __init__(self, metric: _Optional[str] = ..., ts: _Optional[_Iterable[float]] = ..., steps: _Optional[_Iterable[_Union[QuantileValues, _Mapping]]] = ...) -> None: ...

class QuantileValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class ForecastPoint(_message.Message):
    __slots__ = ("ts", "metric", "values", "actual")
    TS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    ts: float
    metric: str
    values: _containers.RepeatedScalarFieldContainer[float]
    actual: float
    def __init__(self, ts: _Optional[float] = ..., metric: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ..., actual: _Optional[float] = ...) -> None: ...

class ForecastAccuracy(_message.Message):
    __slots__ = ("pinball", "coverage_p90", "coverage_p99", "count")
    PINBALL_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_P90_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_P99_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    pinball: float
    coverage_p90: float
    coverage_p99: float
    count: int
    def __init__(self, pinball: _Optional[float] = ..., coverage_p90: _Optional[float] = ..., coverage_p99: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class GetForecastResponse(_message.Message):
    __slots__ = ("host", "vm", "model", "cold_start", "origin_ts", "step_s", "quantiles", "latest", "past", "accuracy")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_TS_FIELD_NUMBER: _ClassVar[int]
    STEP_S_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    PAST_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm: _model_pb2.VmInfo
    model: str
    cold_start: bool
    origin_ts: float
    step_s: float
    quantiles: _containers.RepeatedScalarFieldContainer[float]
    latest: _containers.RepeatedCompositeFieldContainer[MetricForecast]
    past: _containers.RepeatedCompositeFieldContainer[ForecastPoint]
    accuracy: ForecastAccuracy
    def __init__(self, host: _Optional[str] = ..., vm: _Optional[_Union[_model_pb2.VmInfo, _Mapping]] = ..., model: _Optional[str] = ..., cold_start: _Optional[bool] = ..., origin_ts: _Optional[float] = ..., step_s: _Optional[float] = ..., quantiles: _Optional[_Iterable[float]] = ..., latest: _Optional[_Iterable[_Union[MetricForecast, _Mapping]]] = ..., past: _Optional[_Iterable[_Union[ForecastPoint, _Mapping]]] = ..., accuracy: _Optional[_Union[ForecastAccuracy, _Mapping]] = ...) -> None: ...

class GetForecastAccuracyRequest(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: str
    def __init__(self, host: _Optional[str] = ...) -> None: ...

class VmForecastAccuracy(_message.Message):
    __slots__ = ("host", "vm", "metric", "accuracy")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm: str
    metric: str
    accuracy: ForecastAccuracy
    def __init__(self, host: _Optional[str] = ..., vm: _Optional[str] = ..., metric: _Optional[str] = ..., accuracy: _Optional[_Union[ForecastAccuracy, _Mapping]] = ...) -> None: ...

class GetForecastAccuracyResponse(_message.Message):
    __slots__ = ("model", "overall_cpu", "overall_memory", "vms", "scored_at", "window_s")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OVERALL_CPU_FIELD_NUMBER: _ClassVar[int]
    OVERALL_MEMORY_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    SCORED_AT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    overall_cpu: ForecastAccuracy
    overall_memory: ForecastAccuracy
    vms: _containers.RepeatedCompositeFieldContainer[VmForecastAccuracy]
    scored_at: float
    window_s: float
    def __init__(self, model: _Optional[str] = ..., overall_cpu: _Optional[_Union[ForecastAccuracy, _Mapping]] = ..., overall_memory: _Optional[_Union[ForecastAccuracy, _Mapping]] = ..., vms: _Optional[_Iterable[_Union[VmForecastAccuracy, _Mapping]]] = ..., scored_at: _Optional[float] = ..., window_s: _Optional[float] = ...) -> None: ...

class GetAggregateForecastRequest(_message.Message):
    __slots__ = ("kind", "name")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class AggregateForecast(_message.Message):
    __slots__ = ("kind", "name", "model", "cold_start", "origin_ts", "step_s", "quantiles", "forecasts", "vms", "cpu_capacity_cores", "memory_capacity_mib")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_TS_FIELD_NUMBER: _ClassVar[int]
    STEP_S_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    FORECASTS_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    CPU_CAPACITY_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_CAPACITY_MIB_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    model: str
    cold_start: bool
    origin_ts: float
    step_s: float
    quantiles: _containers.RepeatedScalarFieldContainer[float]
    forecasts: _containers.RepeatedCompositeFieldContainer[MetricForecast]
    vms: int
    cpu_capacity_cores: float
    memory_capacity_mib: float
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., model: _Optional[str] = ..., cold_start: _Optional[bool] = ..., origin_ts: _Optional[float] = ..., step_s: _Optional[float] = ..., quantiles: _Optional[_Iterable[float]] = ..., forecasts: _Optional[_Iterable[_Union[MetricForecast, _Mapping]]] = ..., vms: _Optional[int] = ..., cpu_capacity_cores: _Optional[float] = ..., memory_capacity_mib: _Optional[float] = ...) -> None: ...

class ListAggregateForecastsRequest(_message.Message):
    __slots__ = ("kind",)
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: str
    def __init__(self, kind: _Optional[str] = ...) -> None: ...

class ListAggregateForecastsResponse(_message.Message):
    __slots__ = ("aggregates",)
    AGGREGATES_FIELD_NUMBER: _ClassVar[int]
    aggregates: _containers.RepeatedCompositeFieldContainer[AggregateForecast]
    def __init__(self, aggregates: _Optional[_Iterable[_Union[AggregateForecast, _Mapping]]] = ...) -> None: ...

class GetPlanRequest(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: str
    def __init__(self, host: _Optional[str] = ...) -> None: ...

class PlannedAction(_message.Message):
    __slots__ = ("vm", "uuid", "host", "kind", "previous", "target", "reason", "confidence", "cost_per_hour", "expected_benefit", "vetoed", "command")
    VM_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    COST_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_BENEFIT_FIELD_NUMBER: _ClassVar[int]
    VETOED_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    vm: str
    uuid: str
    host: str
    kind: str
    previous: _model_pb2.Shape
    target: _model_pb2.Shape
    reason: str
    confidence: float
    cost_per_hour: float
    expected_benefit: float
    vetoed: bool
    command: str
    def __init__(self, vm: _Optional[str] = ..., uuid: _Optional[str] = ..., host: _Optional[str] = ..., kind: _Optional[str] = ..., previous: _Optional[_Union[_model_pb2.Shape, _Mapping]] = ..., target: _Optional[_Union[_model_pb2.Shape, _Mapping]] = ..., reason: _Optional[str] = ..., confidence: _Optional[float] = ..., cost_per_hour: _Optional[float] = ..., expected_benefit: _Optional[float] = ..., vetoed: _Optional[bool] = ..., command: _Optional[str] = ...) -> None: ...

class UnmetDemand(_message.Message):
    __slots__ = ("host", "vm", "uuid", "cpu_cores", "memory_mib", "reason")
    HOST_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    host: str
    vm: str
    uuid: str
    cpu_cores: float
    memory_mib: float
    reason: str
    def __init__(self, host: _Optional[str] = ..., vm: _Optional[str] = ..., uuid: _Optional[str] = ..., cpu_cores: _Optional[float] = ..., memory_mib: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class GetPlanResponse(_message.Message):
    __slots__ = ("mode", "planned_at", "step", "step_s", "vms", "forecast_vms", "actions", "unmet", "cost_per_hour", "customer_cost_per_hour")
    class CustomerCostPerHourEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODE_FIELD_NUMBER: _ClassVar[int]
    PLANNED_AT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEP_S_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    FORECAST_VMS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    UNMET_FIELD_NUMBER: _ClassVar[int]
    COST_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_COST_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    mode: str
    planned_at: float
    step: int
    step_s: float
    vms: int
    forecast_vms: int
    actions: _containers.RepeatedCompositeFieldContainer[PlannedAction]
    unmet: _containers.RepeatedCompositeFieldContainer[UnmetDemand]
    cost_per_hour: float
    customer_cost_per_hour: _containers.ScalarMap[str, float]
    def __init__(self, mode: _Optional[str] = ..., planned_at: _Optional[float] = ..., step: _Optional[int] = ..., step_s: _Optional[float] = ..., vms: _Optional[int] = ..., forecast_vms: _Optional[int] = ..., actions: _Optional[_Iterable[_Union[PlannedAction, _Mapping]]] = ..., unmet: _Optional[_Iterable[_Union[UnmetDemand, _Mapping]]] = ..., cost_per_hour: _Optional[float] = ..., customer_cost_per_hour: _Optional[_Mapping[str, float]] = ...) -> None: ...
