from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Shape(_message.Message):
    __slots__ = ("vcpus", "cpu_cores", "memory_mib")
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    vcpus: int
    cpu_cores: float
    memory_mib: int
    def __init__(self, vcpus: _Optional[int] = ..., cpu_cores: _Optional[float] = ..., memory_mib: _Optional[int] = ...) -> None: ...

class HostInfo(_message.Message):
    __slots__ = ("hostname", "uri", "cpus", "memory_mib", "hypervisor", "libvirt_version")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    HYPERVISOR_FIELD_NUMBER: _ClassVar[int]
    LIBVIRT_VERSION_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    uri: str
    cpus: int
    memory_mib: int
    hypervisor: str
    libvirt_version: str
    def __init__(self, hostname: _Optional[str] = ..., uri: _Optional[str] = ..., cpus: _Optional[int] = ..., memory_mib: _Optional[int] = ..., hypervisor: _Optional[str] = ..., libvirt_version: _Optional[str] = ...) -> None: ...

class VmInfo(_message.Message):
    __slots__ = ("name", "uuid", "state", "vcpus", "max_vcpus", "cpu_quota_cores", "memory_mib", "max_memory_mib", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MAX_VCPUS_FIELD_NUMBER: _ClassVar[int]
    CPU_QUOTA_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    uuid: str
    state: str
    vcpus: int
    max_vcpus: int
    cpu_quota_cores: float
    memory_mib: int
    max_memory_mib: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., uuid: _Optional[str] = ..., state: _Optional[str] = ..., vcpus: _Optional[int] = ..., max_vcpus: _Optional[int] = ..., cpu_quota_cores: _Optional[float] = ..., memory_mib: _Optional[int] = ..., max_memory_mib: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class VmSample(_message.Message):
    __slots__ = ("uuid", "ts", "interval_s", "cpu_cores", "vcpus", "cpu_quota_cores", "memory_mib", "memory_used_mib", "memory_available_mib", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps")
    UUID_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    CPU_QUOTA_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_MIB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_MIB_FIELD_NUMBER: _ClassVar[int]
    DISK_READ_BPS_FIELD_NUMBER: _ClassVar[int]
    DISK_WRITE_BPS_FIELD_NUMBER: _ClassVar[int]
    NET_RX_BPS_FIELD_NUMBER: _ClassVar[int]
    NET_TX_BPS_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    ts: float
    interval_s: float
    cpu_cores: float
    vcpus: int
    cpu_quota_cores: float
    memory_mib: int
    memory_used_mib: float
    memory_available_mib: float
    disk_read_bps: float
    disk_write_bps: float
    net_rx_bps: float
    net_tx_bps: float
    def __init__(self, uuid: _Optional[str] = ..., ts: _Optional[float] = ..., interval_s: _Optional[float] = ..., cpu_cores: _Optional[float] = ..., vcpus: _Optional[int] = ..., cpu_quota_cores: _Optional[float] = ..., memory_mib: _Optional[int] = ..., memory_used_mib: _Optional[float] = ..., memory_available_mib: _Optional[float] = ..., disk_read_bps: _Optional[float] = ..., disk_write_bps: _Optional[float] = ..., net_rx_bps: _Optional[float] = ..., net_tx_bps: _Optional[float] = ...) -> None: ...

class HostSample(_message.Message):
    __slots__ = ("ts", "cpu_count", "cpu_used_cores", "memory_total_mib", "memory_used_mib", "memory_available_mib", "load1")
    TS_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    CPU_USED_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_MIB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_MIB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_MIB_FIELD_NUMBER: _ClassVar[int]
    LOAD1_FIELD_NUMBER: _ClassVar[int]
    ts: float
    cpu_count: int
    cpu_used_cores: float
    memory_total_mib: float
    memory_used_mib: float
    memory_available_mib: float
    load1: float
    def __init__(self, ts: _Optional[float] = ..., cpu_count: _Optional[int] = ..., cpu_used_cores: _Optional[float] = ..., memory_total_mib: _Optional[float] = ..., memory_used_mib: _Optional[float] = ..., memory_available_mib: _Optional[float] = ..., load1: _Optional[float] = ...) -> None: ...

class Resize(_message.Message):
    __slots__ = ("vm", "target", "reason")
    VM_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    vm: str
    target: Shape
    reason: str
    def __init__(self, vm: _Optional[str] = ..., target: _Optional[_Union[Shape, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class PreSculpt(_message.Message):
    __slots__ = ("vm", "target", "demand_at", "reason")
    VM_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DEMAND_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    vm: str
    target: Shape
    demand_at: float
    reason: str
    def __init__(self, vm: _Optional[str] = ..., target: _Optional[_Union[Shape, _Mapping]] = ..., demand_at: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class GracefulDowngrade(_message.Message):
    __slots__ = ("vm", "target", "reason")
    VM_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    vm: str
    target: Shape
    reason: str
    def __init__(self, vm: _Optional[str] = ..., target: _Optional[_Union[Shape, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ShadowFill(_message.Message):
    __slots__ = ("pool", "size", "warm_state")
    POOL_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    WARM_STATE_FIELD_NUMBER: _ClassVar[int]
    pool: str
    size: int
    warm_state: str
    def __init__(self, pool: _Optional[str] = ..., size: _Optional[int] = ..., warm_state: _Optional[str] = ...) -> None: ...

class ShadowActivate(_message.Message):
    __slots__ = ("pool", "assigned_name", "shape", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    POOL_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    pool: str
    assigned_name: str
    shape: Shape
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, pool: _Optional[str] = ..., assigned_name: _Optional[str] = ..., shape: _Optional[_Union[Shape, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ShadowDrain(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: str
    def __init__(self, pool: _Optional[str] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("id", "issued_at", "deadline", "resize", "presculpt", "downgrade", "shadow_fill", "shadow_activate", "shadow_drain")
    ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    PRESCULPT_FIELD_NUMBER: _ClassVar[int]
    DOWNGRADE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FILL_FIELD_NUMBER: _ClassVar[int]
    SHADOW_ACTIVATE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_DRAIN_FIELD_NUMBER: _ClassVar[int]
    id: str
    issued_at: float
    deadline: float
    resize: Resize
    presculpt: PreSculpt
    downgrade: GracefulDowngrade
    shadow_fill: ShadowFill
    shadow_activate: ShadowActivate
    shadow_drain: ShadowDrain
    def __init__(self, id: _Optional[str] = ..., issued_at: _Optional[float] = ..., deadline: _Optional[float] = ..., resize: _Optional[_Union[Resize, _Mapping]] = ..., presculpt: _Optional[_Union[PreSculpt, _Mapping]] = ..., downgrade: _Optional[_Union[GracefulDowngrade, _Mapping]] = ..., shadow_fill: _Optional[_Union[ShadowFill, _Mapping]] = ..., shadow_activate: _Optional[_Union[ShadowActivate, _Mapping]] = ..., shadow_drain: _Optional[_Union[ShadowDrain, _Mapping]] = ...) -> None: ...

class CommandOutcome(_message.Message):
    __slots__ = ("command_id", "status", "message", "steps", "vm", "finished_at")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[CommandOutcome.Status]
        APPLIED: _ClassVar[CommandOutcome.Status]
        UNCHANGED: _ClassVar[CommandOutcome.Status]
        REFUSED: _ClassVar[CommandOutcome.Status]
        FAILED: _ClassVar[CommandOutcome.Status]
        EXPIRED: _ClassVar[CommandOutcome.Status]
    STATUS_UNSPECIFIED: CommandOutcome.Status
    APPLIED: CommandOutcome.Status
    UNCHANGED: CommandOutcome.Status
    REFUSED: CommandOutcome.Status
    FAILED: CommandOutcome.Status
    EXPIRED: CommandOutcome.Status
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    status: CommandOutcome.Status
    message: str
    steps: _containers.RepeatedScalarFieldContainer[str]
    vm: VmInfo
    finished_at: float
    def __init__(self, command_id: _Optional[str] = ..., status: _Optional[_Union[CommandOutcome.Status, str]] = ..., message: _Optional[str] = ..., steps: _Optional[_Iterable[str]] = ..., vm: _Optional[_Union[VmInfo, _Mapping]] = ..., finished_at: _Optional[float] = ...) -> None: ...
