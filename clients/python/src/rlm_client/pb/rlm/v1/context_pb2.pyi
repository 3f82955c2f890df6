from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContextFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTEXT_FORMAT_UNSPECIFIED: _ClassVar[ContextFormat]
    CONTEXT_FORMAT_TEXT: _ClassVar[ContextFormat]
    CONTEXT_FORMAT_JSON: _ClassVar[ContextFormat]
CONTEXT_FORMAT_UNSPECIFIED: ContextFormat
CONTEXT_FORMAT_TEXT: ContextFormat
CONTEXT_FORMAT_JSON: ContextFormat

class ContextInput(_message.Message):
    __slots__ = ("text", "context_id", "format")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    text: str
    context_id: str
    format: ContextFormat
    def __init__(self, text: _Optional[str] = ..., context_id: _Optional[str] = ..., format: _Optional[_Union[ContextFormat, str]] = ...) -> None: ...
