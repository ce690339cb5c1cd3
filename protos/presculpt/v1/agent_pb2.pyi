from presculpt.v1 import model_pb2 as _model_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hello(_message.Message):
    __slots__ = ("agent_id", "host", "vms", "agent_version")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    host: _model_pb2.HostInfo
    vms: _containers.RepeatedCompositeFieldContainer[_model_pb2.VmInfo]
    agent_version: str
    def __init__(self, agent_id: _Optional[str] = ..., host: _Optional[_Union[_model_pb2.HostInfo, _Mapping]] = ..., vms: _Optional[_Iterable[_Union[_model_pb2.VmInfo, _Mapping]]] = ..., agent_version: _Optional[str] = ...) -> None: ...

class Inventory(_message.Message):
    __slots__ = ("vms",)
    VMS_FIELD_NUMBER: _ClassVar[int]
    vms: _containers.RepeatedCompositeFieldContainer[_model_pb2.VmInfo]
    def __init__(self, vms: _Optional[_Iterable[_Union[_model_pb2.VmInfo, _Mapping]]] = ...) -> None: ...

class MetricBatch(_message.Message):
    __slots__ = ("seq", "vms", "host")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    VMS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    seq: int
    vms: _containers.RepeatedCompositeFieldContainer[_model_pb2.VmSample]
    host: _model_pb2.HostSample
    def __init__(self, seq: _Optional[int] = ..., vms: _Optional[_Iterable[_Union[_model_pb2.VmSample, _Mapping]]] = ..., host: _Optional[_Union[_model_pb2.HostSample, _Mapping]] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "batch", "inventory", "outcome")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    batch: MetricBatch
    inventory: Inventory
    outcome: _model_pb2.CommandOutcome
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., batch: _Optional[_Union[MetricBatch, _Mapping]] = ..., inventory: _Optional[_Union[Inventory, _Mapping]] = ..., outcome: _Optional[_Union[_model_pb2.CommandOutcome, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("last_stored_seq", "coordinator_version")
    LAST_STORED_SEQ_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    last_stored_seq: int
    coordinator_version: str
    def __init__(self, last_stored_seq: _Optional[int] = ..., coordinator_version: _Optional[str] = ...) -> None: ...

class BatchAck(_message.Message):
    __slots__ = ("seq", "duplicate", "code", "message")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    duplicate: bool
    code: int
    message: str
    def __init__(self, seq: _Optional[int] = ..., duplicate: _Optional[bool] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("welcome", "ack", "command")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    ack: BatchAck
    command: _model_pb2.Command
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., ack: _Optional[_Union[BatchAck, _Mapping]] = ..., command: _Optional[_Union[_model_pb2.Command, _Mapping]] = ...) -> None: ...
