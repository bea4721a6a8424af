from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DetailKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DETAIL_UNSPECIFIED: _ClassVar[DetailKind]
    PICTURE: _ClassVar[DetailKind]
    SURFACE: _ClassVar[DetailKind]
DETAIL_UNSPECIFIED: DetailKind
PICTURE: DetailKind
SURFACE: DetailKind

class PreparedQuery(_message.Message):
    __slots__ = ("descriptors", "surface", "extractor_version")
    class DescriptorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    DESCRIPTORS_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    EXTRACTOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    descriptors: _containers.ScalarMap[str, bytes]
    surface: bytes
    extractor_version: str
    def __init__(self, descriptors: _Optional[_Mapping[str, bytes]] = ..., surface: _Optional[bytes] = ..., extractor_version: _Optional[str] = ...) -> None: ...

class CorrelateRequest(_message.Message):
    __slots__ = ("agreement_id", "request_id", "requesting_agency", "calibre", "query_date", "prepared", "scan", "scan_name", "pixel_spacing_m", "length_unit", "max_results", "date_from", "date_to")
    AGREEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTING_AGENCY_FIELD_NUMBER: _ClassVar[int]
    CALIBRE_FIELD_NUMBER: _ClassVar[int]
    QUERY_DATE_FIELD_NUMBER: _ClassVar[int]
    PREPARED_FIELD_NUMBER: _ClassVar[int]
    SCAN_FIELD_NUMBER: _ClassVar[int]
    SCAN_NAME_FIELD_NUMBER: _ClassVar[int]
    PIXEL_SPACING_M_FIELD_NUMBER: _ClassVar[int]
    LENGTH_UNIT_FIELD_NUMBER: _ClassVar[int]
    MAX_RESULTS_FIELD_NUMBER: _ClassVar[int]
    DATE_FROM_FIELD_NUMBER: _ClassVar[int]
    DATE_TO_FIELD_NUMBER: _ClassVar[int]
    agreement_id: str
    request_id: str
    requesting_agency: str
    calibre: str
    query_date: str
    prepared: PreparedQuery
    scan: bytes
    scan_name: str
    pixel_spacing_m: float
    length_unit: str
    max_results: int
    date_from: str
    date_to: str
    def __init__(self, agreement_id: _Optional[str] = ..., request_id: _Optional[str] = ..., requesting_agency: _Optional[str] = ..., calibre: _Optional[str] = ..., query_date: _Optional[str] = ..., prepared: _Optional[_Union[PreparedQuery, _Mapping]] = ..., scan: _Optional[bytes] = ..., scan_name: _Optional[str] = ..., pixel_spacing_m: _Optional[float] = ..., length_unit: _Optional[str] = ..., max_results: _Optional[int] = ..., date_from: _Optional[str] = ..., date_to: _Optional[str] = ...) -> None: ...

class ForeignCandidate(_message.Message):
    __slots__ = ("rank", "ref", "coarse_score", "score", "cmc", "non_match_frequency", "screen_score", "rescored", "incident_id", "agency", "calibre", "acquisition_date")
    RANK_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    COARSE_SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CMC_FIELD_NUMBER: _ClassVar[int]
    NON_MATCH_FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    SCREEN_SCORE_FIELD_NUMBER: _ClassVar[int]
    RESCORED_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    CALIBRE_FIELD_NUMBER: _ClassVar[int]
    ACQUISITION_DATE_FIELD_NUMBER: _ClassVar[int]
    rank: int
    ref: str
    coarse_score: float
    score: float
    cmc: int
    non_match_frequency: float
    screen_score: float
    rescored: bool
    incident_id: str
    agency: str
    calibre: str
    acquisition_date: str
    def __init__(self, rank: _Optional[int] = ..., ref: _Optional[str] = ..., coarse_score: _Optional[float] = ..., score: _Optional[float] = ..., cmc: _Optional[int] = ..., non_match_frequency: _Optional[float] = ..., screen_score: _Optional[float] = ..., rescored: _Optional[bool] = ..., incident_id: _Optional[str] = ..., agency: _Optional[str] = ..., calibre: _Optional[str] = ..., acquisition_date: _Optional[str] = ...) -> None: ...

class CorrelateResponse(_message.Message):
    __slots__ = ("server", "agreement_id", "request_id", "release", "candidates", "partial", "scored")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    server: str
    agreement_id: str
    request_id: str
    release: str
    candidates: _containers.RepeatedCompositeFieldContainer[ForeignCandidate]
    partial: bool
    scored: int
    def __init__(self, server: _Optional[str] = ..., agreement_id: _Optional[str] = ..., request_id: _Optional[str] = ..., release: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[ForeignCandidate, _Mapping]]] = ..., partial: _Optional[bool] = ..., scored: _Optional[int] = ...) -> None: ...

class DetailRequest(_message.Message):
    __slots__ = ("agreement_id", "ref", "kind", "query_surface", "request_id", "requesting_agency")
    AGREEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    QUERY_SURFACE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTING_AGENCY_FIELD_NUMBER: _ClassVar[int]
    agreement_id: str
    ref: str
    kind: DetailKind
    query_surface: bytes
    request_id: str
    requesting_agency: str
    def __init__(self, agreement_id: _Optional[str] = ..., ref: _Optional[str] = ..., kind: _Optional[_Union[DetailKind, str]] = ..., query_surface: _Optional[bytes] = ..., request_id: _Optional[str] = ..., requesting_agency: _Optional[str] = ...) -> None: ...

class DetailResponse(_message.Message):
    __slots__ = ("ref", "agreement_id", "png", "surface", "score", "cmc")
    REF_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CMC_FIELD_NUMBER: _ClassVar[int]
    ref: str
    agreement_id: str
    png: bytes
    surface: bytes
    score: float
    cmc: int
    def __init__(self, ref: _Optional[str] = ..., agreement_id: _Optional[str] = ..., png: _Optional[bytes] = ..., surface: _Optional[bytes] = ..., score: _Optional[float] = ..., cmc: _Optional[int] = ...) -> None: ...

class HitNotice(_message.Message):
    __slots__ = ("hit_id", "agreement_id", "ref", "requesting_agency", "requester_casing_ref", "examiner", "comment", "confirmed_at")
    HIT_ID_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    REQUESTING_AGENCY_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_CASING_REF_FIELD_NUMBER: _ClassVar[int]
    EXAMINER_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_AT_FIELD_NUMBER: _ClassVar[int]
    hit_id: str
    agreement_id: str
    ref: str
    requesting_agency: str
    requester_casing_ref: str
    examiner: str
    comment: str
    confirmed_at: str
    def __init__(self, hit_id: _Optional[str] = ..., agreement_id: _Optional[str] = ..., ref: _Optional[str] = ..., requesting_agency: _Optional[str] = ..., requester_casing_ref: _Optional[str] = ..., examiner: _Optional[str] = ..., comment: _Optional[str] = ..., confirmed_at: _Optional[str] = ...) -> None: ...

class HitReceipt(_message.Message):
    __slots__ = ("hit_id", "server", "newly_recorded", "recorded_at")
    HIT_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    NEWLY_RECORDED_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    hit_id: str
    server: str
    newly_recorded: bool
    recorded_at: str
    def __init__(self, hit_id: _Optional[str] = ..., server: _Optional[str] = ..., newly_recorded: _Optional[bool] = ..., recorded_at: _Optional[str] = ...) -> None: ...
