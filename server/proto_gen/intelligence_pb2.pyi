from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TraceRequest(_message.Message):
    __slots__ = ("trace_id", "firearm_id", "requested_of", "requested_at", "status", "outcome", "updated_at", "updated_by")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    FIREARM_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_OF_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    firearm_id: str
    requested_of: str
    requested_at: str
    status: str
    outcome: str
    updated_at: str
    updated_by: str
    def __init__(self, trace_id: _Optional[str] = ..., firearm_id: _Optional[str] = ..., requested_of: _Optional[str] = ..., requested_at: _Optional[str] = ..., status: _Optional[str] = ..., outcome: _Optional[str] = ..., updated_at: _Optional[str] = ..., updated_by: _Optional[str] = ...) -> None: ...

class StatusChange(_message.Message):
    __slots__ = ("status", "previous", "comment", "changed_at", "changed_by")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    status: str
    previous: str
    comment: str
    changed_at: str
    changed_by: str
    def __init__(self, status: _Optional[str] = ..., previous: _Optional[str] = ..., comment: _Optional[str] = ..., changed_at: _Optional[str] = ..., changed_by: _Optional[str] = ...) -> None: ...

class Firearm(_message.Message):
    __slots__ = ("firearm_id", "agency", "make", "model", "calibre", "serial_number", "recovered_on", "place", "lat", "lon", "status", "created_at", "created_by", "test_fire_casing_ids", "traces", "status_changes")
    FIREARM_ID_FIELD_NUMBER: _ClassVar[int]
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    MAKE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CALIBRE_FIELD_NUMBER: _ClassVar[int]
    SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_ON_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    TEST_FIRE_CASING_IDS_FIELD_NUMBER: _ClassVar[int]
    TRACES_FIELD_NUMBER: _ClassVar[int]
    STATUS_CHANGES_FIELD_NUMBER: _ClassVar[int]
    firearm_id: str
    agency: str
    make: str
    model: str
    calibre: str
    serial_number: str
    recovered_on: str
    place: str
    lat: float
    lon: float
    status: str
    created_at: str
    created_by: str
    test_fire_casing_ids: _containers.RepeatedScalarFieldContainer[str]
    traces: _containers.RepeatedCompositeFieldContainer[TraceRequest]
    status_changes: _containers.RepeatedCompositeFieldContainer[StatusChange]
    def __init__(self, firearm_id: _Optional[str] = ..., agency: _Optional[str] = ..., make: _Optional[str] = ..., model: _Optional[str] = ..., calibre: _Optional[str] = ..., serial_number: _Optional[str] = ..., recovered_on: _Optional[str] = ..., place: _Optional[str] = ..., lat: _Optional[float] = ..., lon: _Optional[float] = ..., status: _Optional[str] = ..., created_at: _Optional[str] = ..., created_by: _Optional[str] = ..., test_fire_casing_ids: _Optional[_Iterable[str]] = ..., traces: _Optional[_Iterable[_Union[TraceRequest, _Mapping]]] = ..., status_changes: _Optional[_Iterable[_Union[StatusChange, _Mapping]]] = ...) -> None: ...

class AddFirearmRequest(_message.Message):
    __slots__ = ("firearm_id", "make", "model", "calibre", "serial_number", "recovered_on", "place", "lat", "lon", "status")
    FIREARM_ID_FIELD_NUMBER: _ClassVar[int]
    MAKE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CALIBRE_FIELD_NUMBER: _ClassVar[int]
    SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_ON_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    firearm_id: str
    make: str
    model: str
    calibre: str
    serial_number: str
    recovered_on: str
    place: str
    lat: float
    lon: float
    status: str
    def __init__(self, firearm_id: _Optional[str] = ..., make: _Optional[str] = ..., model: _Optional[str] = ..., calibre: _Optional[str] = ..., serial_number: _Optional[str] = ..., recovered_on: _Optional[str] = ..., place: _Optional[str] = ..., lat: _Optional[float] = ..., lon: _Optional[float] = ..., status: _Optional[str] = ...) -> None: ...

class GetFirearmRequest(_message.Message):
    __slots__ = ("firearm_id",)
    FIREARM_ID_FIELD_NUMBER: _ClassVar[int]
    firearm_id: str
    def __init__(self, firearm_id: _Optional[str] = ...) -> None: ...

class SetFirearmStatusRequest(_message.Message):
    __slots__ = ("firearm_id", "status", "comment")
    FIREARM_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    firearm_id: str
    status: str
    comment: str
    def __init__(self, firearm_id: _Optional[str] = ..., status: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...

class AddTestFireRequest(_message.Message):
    __slots__ = ("firearm_id", "casing_id")
    FIREARM_ID_FIELD_NUMBER: _ClassVar[int]
    CASING_ID_FIELD_NUMBER: _ClassVar[int]
    firearm_id: str
    casing_id: str
    def __init__(self, firearm_id: _Optional[str] = ..., casing_id: _Optional[str] = ...) -> None: ...

class AddTraceRequest(_message.Message):
    __slots__ = ("firearm_id", "requested_of", "requested_at")
    FIREARM_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_OF_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    firearm_id: str
    requested_of: str
    requested_at: str
    def __init__(self, firearm_id: _Optional[str] = ..., requested_of: _Optional[str] = ..., requested_at: _Optional[str] = ...) -> None: ...

class UpdateTraceRequest(_message.Message):
    __slots__ = ("trace_id", "status", "outcome")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    status: str
    outcome: str
    def __init__(self, trace_id: _Optional[str] = ..., status: _Optional[str] = ..., outcome: _Optional[str] = ...) -> None: ...

class SetIncidentLocationRequest(_message.Message):
    __slots__ = ("incident_id", "lat", "lon")
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    incident_id: str
    lat: float
    lon: float
    def __init__(self, incident_id: _Optional[str] = ..., lat: _Optional[float] = ..., lon: _Optional[float] = ...) -> None: ...

class SetIncidentLocationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSeriesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSeriesResponse(_message.Message):
    __slots__ = ("series_json",)
    SERIES_JSON_FIELD_NUMBER: _ClassVar[int]
    series_json: str
    def __init__(self, series_json: _Optional[str] = ...) -> None: ...

class GetSeriesRequest(_message.Message):
    __slots__ = ("series_id", "incident_id", "casing_id", "firearm_id", "with_html", "with_png")
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    CASING_ID_FIELD_NUMBER: _ClassVar[int]
    FIREARM_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_HTML_FIELD_NUMBER: _ClassVar[int]
    WITH_PNG_FIELD_NUMBER: _ClassVar[int]
    series_id: str
    incident_id: str
    casing_id: str
    firearm_id: str
    with_html: bool
    with_png: bool
    def __init__(self, series_id: _Optional[str] = ..., incident_id: _Optional[str] = ..., casing_id: _Optional[str] = ..., firearm_id: _Optional[str] = ..., with_html: _Optional[bool] = ..., with_png: _Optional[bool] = ...) -> None: ...

class SeriesReport(_message.Message):
    __slots__ = ("series_json", "csv", "html", "png")
    SERIES_JSON_FIELD_NUMBER: _ClassVar[int]
    CSV_FIELD_NUMBER: _ClassVar[int]
    HTML_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    series_json: str
    csv: str
    html: str
    png: bytes
    def __init__(self, series_json: _Optional[str] = ..., csv: _Optional[str] = ..., html: _Optional[str] = ..., png: _Optional[bytes] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("date_from", "date_to", "jurisdictions", "with_png")
    DATE_FROM_FIELD_NUMBER: _ClassVar[int]
    DATE_TO_FIELD_NUMBER: _ClassVar[int]
    JURISDICTIONS_FIELD_NUMBER: _ClassVar[int]
    WITH_PNG_FIELD_NUMBER: _ClassVar[int]
    date_from: str
    date_to: str
    jurisdictions: _containers.RepeatedScalarFieldContainer[str]
    with_png: bool
    def __init__(self, date_from: _Optional[str] = ..., date_to: _Optional[str] = ..., jurisdictions: _Optional[_Iterable[str]] = ..., with_png: _Optional[bool] = ...) -> None: ...

class HubReport(_message.Message):
    __slots__ = ("report_json", "csv", "png")
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    CSV_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    report_json: str
    csv: str
    png: bytes
    def __init__(self, report_json: _Optional[str] = ..., csv: _Optional[str] = ..., png: _Optional[bytes] = ...) -> None: ...
