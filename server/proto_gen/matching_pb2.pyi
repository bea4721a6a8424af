from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCOPE_LOCAL: _ClassVar[SearchScope]
    SCOPE_ALL: _ClassVar[SearchScope]
    SCOPE_PEERS: _ClassVar[SearchScope]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    HIT: _ClassVar[Verdict]
    EXCLUDED: _ClassVar[Verdict]
    INCONCLUSIVE: _ClassVar[Verdict]
SCOPE_LOCAL: SearchScope
SCOPE_ALL: SearchScope
SCOPE_PEERS: SearchScope
VERDICT_UNSPECIFIED: Verdict
HIT: Verdict
EXCLUDED: Verdict
INCONCLUSIVE: Verdict

class SubmitMetadata(_message.Message):
    __slots__ = ("agency_case_number", "incident_id", "calibre", "firing_pin_class", "acquisition_date", "place", "file_name", "format", "pixel_spacing_m", "search_after_submit", "max_results", "length_unit", "light", "light_azimuth_deg")
    AGENCY_CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    CALIBRE_FIELD_NUMBER: _ClassVar[int]
    FIRING_PIN_CLASS_FIELD_NUMBER: _ClassVar[int]
    ACQUISITION_DATE_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PIXEL_SPACING_M_FIELD_NUMBER: _ClassVar[int]
    SEARCH_AFTER_SUBMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_RESULTS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_UNIT_FIELD_NUMBER: _ClassVar[int]
    LIGHT_FIELD_NUMBER: _ClassVar[int]
    LIGHT_AZIMUTH_DEG_FIELD_NUMBER: _ClassVar[int]
    agency_case_number: str
    incident_id: str
    calibre: str
    firing_pin_class: str
    acquisition_date: str
    place: str
    file_name: str
    format: str
    pixel_spacing_m: float
    search_after_submit: bool
    max_results: int
    length_unit: str
    light: str
    light_azimuth_deg: float
    def __init__(self, agency_case_number: _Optional[str] = ..., incident_id: _Optional[str] = ..., calibre: _Optional[str] = ..., firing_pin_class: _Optional[str] = ..., acquisition_date: _Optional[str] = ..., place: _Optional[str] = ..., file_name: _Optional[str] = ..., format: _Optional[str] = ..., pixel_spacing_m: _Optional[float] = ..., search_after_submit: _Optional[bool] = ..., max_results: _Optional[int] = ..., length_unit: _Optional[str] = ..., light: _Optional[str] = ..., light_azimuth_deg: _Optional[float] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("metadata", "chunk")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    metadata: SubmitMetadata
    chunk: bytes
    def __init__(self, metadata: _Optional[_Union[SubmitMetadata, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class Segmentation(_message.Message):
    __slots__ = ("primer_center_row", "primer_center_col", "primer_radius_px", "firing_pin_shape", "firing_pin_center_row", "firing_pin_center_col", "firing_pin_radius_px", "precropped", "summary_json")
    PRIMER_CENTER_ROW_FIELD_NUMBER: _ClassVar[int]
    PRIMER_CENTER_COL_FIELD_NUMBER: _ClassVar[int]
    PRIMER_RADIUS_PX_FIELD_NUMBER: _ClassVar[int]
    FIRING_PIN_SHAPE_FIELD_NUMBER: _ClassVar[int]
    FIRING_PIN_CENTER_ROW_FIELD_NUMBER: _ClassVar[int]
    FIRING_PIN_CENTER_COL_FIELD_NUMBER: _ClassVar[int]
    FIRING_PIN_RADIUS_PX_FIELD_NUMBER: _ClassVar[int]
    PRECROPPED_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    primer_center_row: float
    primer_center_col: float
    primer_radius_px: float
    firing_pin_shape: str
    firing_pin_center_row: float
    firing_pin_center_col: float
    firing_pin_radius_px: float
    precropped: bool
    summary_json: str
    def __init__(self, primer_center_row: _Optional[float] = ..., primer_center_col: _Optional[float] = ..., primer_radius_px: _Optional[float] = ..., firing_pin_shape: _Optional[str] = ..., firing_pin_center_row: _Optional[float] = ..., firing_pin_center_col: _Optional[float] = ..., firing_pin_radius_px: _Optional[float] = ..., precropped: _Optional[bool] = ..., summary_json: _Optional[str] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("casing_id", "sha256", "size_bytes", "segmentation", "search")
    CASING_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    casing_id: str
    sha256: str
    size_bytes: int
    segmentation: Segmentation
    search: SearchResponse
    def __init__(self, casing_id: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., segmentation: _Optional[_Union[Segmentation, _Mapping]] = ..., search: _Optional[_Union[SearchResponse, _Mapping]] = ...) -> None: ...

class SearchFilters(_message.Message):
    __slots__ = ("calibre", "date_from", "date_to", "jurisdictions", "max_results")
    CALIBRE_FIELD_NUMBER: _ClassVar[int]
    DATE_FROM_FIELD_NUMBER: _ClassVar[int]
    DATE_TO_FIELD_NUMBER: _ClassVar[int]
    JURISDICTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_RESULTS_FIELD_NUMBER: _ClassVar[int]
    calibre: str
    date_from: str
    date_to: str
    jurisdictions: _containers.RepeatedScalarFieldContainer[str]
    max_results: int
    def __init__(self, calibre: _Optional[str] = ..., date_from: _Optional[str] = ..., date_to: _Optional[str] = ..., jurisdictions: _Optional[_Iterable[str]] = ..., max_results: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("casing_id", "file", "file_name", "pixel_spacing_m", "filters", "length_unit", "light", "light_azimuth_deg", "scope", "peers")
    CASING_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    PIXEL_SPACING_M_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_UNIT_FIELD_NUMBER: _ClassVar[int]
    LIGHT_FIELD_NUMBER: _ClassVar[int]
    LIGHT_AZIMUTH_DEG_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    casing_id: str
    file: bytes
    file_name: str
    pixel_spacing_m: float
    filters: SearchFilters
    length_unit: str
    light: str
    light_azimuth_deg: float
    scope: SearchScope
    peers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, casing_id: _Optional[str] = ..., file: _Optional[bytes] = ..., file_name: _Optional[str] = ..., pixel_spacing_m: _Optional[float] = ..., filters: _Optional[_Union[SearchFilters, _Mapping]] = ..., length_unit: _Optional[str] = ..., light: _Optional[str] = ..., light_azimuth_deg: _Optional[float] = ..., scope: _Optional[_Union[SearchScope, str]] = ..., peers: _Optional[_Iterable[str]] = ...) -> None: ...

class PeerOutcome(_message.Message):
    __slots__ = ("server", "agreement_id", "state", "detail", "candidates", "elapsed_s")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    server: str
    agreement_id: str
    state: str
    detail: str
    candidates: int
    elapsed_s: float
    def __init__(self, server: _Optional[str] = ..., agreement_id: _Optional[str] = ..., state: _Optional[str] = ..., detail: _Optional[str] = ..., candidates: _Optional[int] = ..., elapsed_s: _Optional[float] = ...) -> None: ...

class Quality(_message.Message):
    __slots__ = ("valid_fraction", "texture_rms", "texture_unit", "noise_rms", "contact_coverage", "segmentation_confidence", "low_confidence", "reasons", "detail_json")
    VALID_FRACTION_FIELD_NUMBER: _ClassVar[int]
    TEXTURE_RMS_FIELD_NUMBER: _ClassVar[int]
    TEXTURE_UNIT_FIELD_NUMBER: _ClassVar[int]
    NOISE_RMS_FIELD_NUMBER: _ClassVar[int]
    CONTACT_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    valid_fraction: float
    texture_rms: float
    texture_unit: str
    noise_rms: float
    contact_coverage: float
    segmentation_confidence: float
    low_confidence: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    detail_json: str
    def __init__(self, valid_fraction: _Optional[float] = ..., texture_rms: _Optional[float] = ..., texture_unit: _Optional[str] = ..., noise_rms: _Optional[float] = ..., contact_coverage: _Optional[float] = ..., segmentation_confidence: _Optional[float] = ..., low_confidence: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ..., detail_json: _Optional[str] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("rank", "casing_id", "region", "coarse_score", "score", "cmc", "non_match_frequency", "incident_id", "agency", "screen_score", "rescored", "identical_file", "quality", "low_confidence", "low_confidence_reasons", "flags", "server", "agreement_id")
    RANK_FIELD_NUMBER: _ClassVar[int]
    CASING_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    COARSE_SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CMC_FIELD_NUMBER: _ClassVar[int]
    NON_MATCH_FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    SCREEN_SCORE_FIELD_NUMBER: _ClassVar[int]
    RESCORED_FIELD_NUMBER: _ClassVar[int]
    IDENTICAL_FILE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_REASONS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    rank: int
    casing_id: str
    region: str
    coarse_score: float
    score: float
    cmc: int
    non_match_frequency: float
    incident_id: str
    agency: str
    screen_score: float
    rescored: bool
    identical_file: bool
    quality: Quality
    low_confidence: bool
    low_confidence_reasons: _containers.RepeatedScalarFieldContainer[str]
    flags: _containers.RepeatedScalarFieldContainer[str]
    server: str
    agreement_id: str
    def __init__(self, rank: _Optional[int] = ..., casing_id: _Optional[str] = ..., region: _Optional[str] = ..., coarse_score: _Optional[float] = ..., score: _Optional[float] = ..., cmc: _Optional[int] = ..., non_match_frequency: _Optional[float] = ..., incident_id: _Optional[str] = ..., agency: _Optional[str] = ..., screen_score: _Optional[float] = ..., rescored: _Optional[bool] = ..., identical_file: _Optional[bool] = ..., quality: _Optional[_Union[Quality, _Mapping]] = ..., low_confidence: _Optional[bool] = ..., low_confidence_reasons: _Optional[_Iterable[str]] = ..., flags: _Optional[_Iterable[str]] = ..., server: _Optional[str] = ..., agreement_id: _Optional[str] = ...) -> None: ...

class CandidateList(_message.Message):
    __slots__ = ("region", "candidates")
    REGION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    region: str
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    def __init__(self, region: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("query_casing_id", "regions", "combined", "partial", "scored", "screened_out", "identical", "query_quality", "peers")
    QUERY_CASING_ID_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    COMBINED_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    SCREENED_OUT_FIELD_NUMBER: _ClassVar[int]
    IDENTICAL_FIELD_NUMBER: _ClassVar[int]
    QUERY_QUALITY_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    query_casing_id: str
    regions: _containers.RepeatedCompositeFieldContainer[CandidateList]
    combined: CandidateList
    partial: bool
    scored: int
    screened_out: int
    identical: _containers.RepeatedCompositeFieldContainer[Candidate]
    query_quality: Quality
    peers: _containers.RepeatedCompositeFieldContainer[PeerOutcome]
    def __init__(self, query_casing_id: _Optional[str] = ..., regions: _Optional[_Iterable[_Union[CandidateList, _Mapping]]] = ..., combined: _Optional[_Union[CandidateList, _Mapping]] = ..., partial: _Optional[bool] = ..., scored: _Optional[int] = ..., screened_out: _Optional[int] = ..., identical: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., query_quality: _Optional[_Union[Quality, _Mapping]] = ..., peers: _Optional[_Iterable[_Union[PeerOutcome, _Mapping]]] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("casing_a", "casing_b", "omit_picture", "server_b")
    CASING_A_FIELD_NUMBER: _ClassVar[int]
    CASING_B_FIELD_NUMBER: _ClassVar[int]
    OMIT_PICTURE_FIELD_NUMBER: _ClassVar[int]
    SERVER_B_FIELD_NUMBER: _ClassVar[int]
    casing_a: str
    casing_b: str
    omit_picture: bool
    server_b: str
    def __init__(self, casing_a: _Optional[str] = ..., casing_b: _Optional[str] = ..., omit_picture: _Optional[bool] = ..., server_b: _Optional[str] = ...) -> None: ...

class Cell(_message.Message):
    __slots__ = ("row", "col", "ccf", "rotation_deg", "dx_m", "dy_m", "congruent")
    ROW_FIELD_NUMBER: _ClassVar[int]
    COL_FIELD_NUMBER: _ClassVar[int]
    CCF_FIELD_NUMBER: _ClassVar[int]
    ROTATION_DEG_FIELD_NUMBER: _ClassVar[int]
    DX_M_FIELD_NUMBER: _ClassVar[int]
    DY_M_FIELD_NUMBER: _ClassVar[int]
    CONGRUENT_FIELD_NUMBER: _ClassVar[int]
    row: int
    col: int
    ccf: float
    rotation_deg: float
    dx_m: float
    dy_m: float
    congruent: bool
    def __init__(self, row: _Optional[int] = ..., col: _Optional[int] = ..., ccf: _Optional[float] = ..., rotation_deg: _Optional[float] = ..., dx_m: _Optional[float] = ..., dy_m: _Optional[float] = ..., congruent: _Optional[bool] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("casing_a", "casing_b", "score", "cmc", "rotation_deg", "dx_m", "dy_m", "region_scores", "cells", "non_match_frequency", "png", "detail_json", "quality_a", "quality_b", "low_confidence", "low_confidence_reasons", "flags", "light_json")
    class RegionScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CASING_A_FIELD_NUMBER: _ClassVar[int]
    CASING_B_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CMC_FIELD_NUMBER: _ClassVar[int]
    ROTATION_DEG_FIELD_NUMBER: _ClassVar[int]
    DX_M_FIELD_NUMBER: _ClassVar[int]
    DY_M_FIELD_NUMBER: _ClassVar[int]
    REGION_SCORES_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    NON_MATCH_FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    QUALITY_A_FIELD_NUMBER: _ClassVar[int]
    QUALITY_B_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_REASONS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    LIGHT_JSON_FIELD_NUMBER: _ClassVar[int]
    casing_a: str
    casing_b: str
    score: float
    cmc: int
    rotation_deg: float
    dx_m: float
    dy_m: float
    region_scores: _containers.ScalarMap[str, float]
    cells: _containers.RepeatedCompositeFieldContainer[Cell]
    non_match_frequency: float
    png: bytes
    detail_json: str
    quality_a: Quality
    quality_b: Quality
    low_confidence: bool
    low_confidence_reasons: _containers.RepeatedScalarFieldContainer[str]
    flags: _containers.RepeatedScalarFieldContainer[str]
    light_json: str
    def __init__(self, casing_a: _Optional[str] = ..., casing_b: _Optional[str] = ..., score: _Optional[float] = ..., cmc: _Optional[int] = ..., rotation_deg: _Optional[float] = ..., dx_m: _Optional[float] = ..., dy_m: _Optional[float] = ..., region_scores: _Optional[_Mapping[str, float]] = ..., cells: _Optional[_Iterable[_Union[Cell, _Mapping]]] = ..., non_match_frequency: _Optional[float] = ..., png: _Optional[bytes] = ..., detail_json: _Optional[str] = ..., quality_a: _Optional[_Union[Quality, _Mapping]] = ..., quality_b: _Optional[_Union[Quality, _Mapping]] = ..., low_confidence: _Optional[bool] = ..., low_confidence_reasons: _Optional[_Iterable[str]] = ..., flags: _Optional[_Iterable[str]] = ..., light_json: _Optional[str] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("casing_id", "candidate_id", "verdict", "comment", "candidate_server")
    CASING_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SERVER_FIELD_NUMBER: _ClassVar[int]
    casing_id: str
    candidate_id: str
    verdict: Verdict
    comment: str
    candidate_server: str
    def __init__(self, casing_id: _Optional[str] = ..., candidate_id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., comment: _Optional[str] = ..., candidate_server: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("decision_id", "casing_id", "candidate_id", "verdict", "comment", "examiner", "agency", "time", "supersedes")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    CASING_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    EXAMINER_FIELD_NUMBER: _ClassVar[int]
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDES_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    casing_id: str
    candidate_id: str
    verdict: Verdict
    comment: str
    examiner: str
    agency: str
    time: str
    supersedes: str
    def __init__(self, decision_id: _Optional[str] = ..., casing_id: _Optional[str] = ..., candidate_id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., comment: _Optional[str] = ..., examiner: _Optional[str] = ..., agency: _Optional[str] = ..., time: _Optional[str] = ..., supersedes: _Optional[str] = ...) -> None: ...

class LinksRequest(_message.Message):
    __slots__ = ("casing_id", "incident_id")
    CASING_ID_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    casing_id: str
    incident_id: str
    def __init__(self, casing_id: _Optional[str] = ..., incident_id: _Optional[str] = ...) -> None: ...

class IncidentNode(_message.Message):
    __slots__ = ("incident_id", "agency", "jurisdiction", "casing_ids")
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    JURISDICTION_FIELD_NUMBER: _ClassVar[int]
    CASING_IDS_FIELD_NUMBER: _ClassVar[int]
    incident_id: str
    agency: str
    jurisdiction: str
    casing_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, incident_id: _Optional[str] = ..., agency: _Optional[str] = ..., jurisdiction: _Optional[str] = ..., casing_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class HitEdge(_message.Message):
    __slots__ = ("incident_a", "incident_b", "casing_a", "casing_b", "examiner", "agency", "time", "decision_id")
    INCIDENT_A_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_B_FIELD_NUMBER: _ClassVar[int]
    CASING_A_FIELD_NUMBER: _ClassVar[int]
    CASING_B_FIELD_NUMBER: _ClassVar[int]
    EXAMINER_FIELD_NUMBER: _ClassVar[int]
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    incident_a: str
    incident_b: str
    casing_a: str
    casing_b: str
    examiner: str
    agency: str
    time: str
    decision_id: str
    def __init__(self, incident_a: _Optional[str] = ..., incident_b: _Optional[str] = ..., casing_a: _Optional[str] = ..., casing_b: _Optional[str] = ..., examiner: _Optional[str] = ..., agency: _Optional[str] = ..., time: _Optional[str] = ..., decision_id: _Optional[str] = ...) -> None: ...

class LinkGraph(_message.Message):
    __slots__ = ("nodes", "edges")
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[IncidentNode]
    edges: _containers.RepeatedCompositeFieldContainer[HitEdge]
    def __init__(self, nodes: _Optional[_Iterable[_Union[IncidentNode, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[HitEdge, _Mapping]]] = ...) -> None: ...

class GetCasingRequest(_message.Message):
    __slots__ = ("casing_id",)
    CASING_ID_FIELD_NUMBER: _ClassVar[int]
    casing_id: str
    def __init__(self, casing_id: _Optional[str] = ...) -> None: ...

class Casing(_message.Message):
    __slots__ = ("casing_id", "sha256", "agency", "incident_id", "agency_case_number", "calibre", "firing_pin_class", "acquisition_date", "place", "file_name", "submitted_by", "submitted_at", "segmentation", "quality")
    CASING_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENCY_CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CALIBRE_FIELD_NUMBER: _ClassVar[int]
    FIRING_PIN_CLASS_FIELD_NUMBER: _ClassVar[int]
    ACQUISITION_DATE_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_BY_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    casing_id: str
    sha256: str
    agency: str
    incident_id: str
    agency_case_number: str
    calibre: str
    firing_pin_class: str
    acquisition_date: str
    place: str
    file_name: str
    submitted_by: str
    submitted_at: str
    segmentation: Segmentation
    quality: Quality
    def __init__(self, casing_id: _Optional[str] = ..., sha256: _Optional[str] = ..., agency: _Optional[str] = ..., incident_id: _Optional[str] = ..., agency_case_number: _Optional[str] = ..., calibre: _Optional[str] = ..., firing_pin_class: _Optional[str] = ..., acquisition_date: _Optional[str] = ..., place: _Optional[str] = ..., file_name: _Optional[str] = ..., submitted_by: _Optional[str] = ..., submitted_at: _Optional[str] = ..., segmentation: _Optional[_Union[Segmentation, _Mapping]] = ..., quality: _Optional[_Union[Quality, _Mapping]] = ...) -> None: ...

class ListCasingsRequest(_message.Message):
    __slots__ = ("incident_id", "calibre", "limit", "offset")
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    CALIBRE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    incident_id: str
    calibre: str
    limit: int
    offset: int
    def __init__(self, incident_id: _Optional[str] = ..., calibre: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class ListCasingsResponse(_message.Message):
    __slots__ = ("casings",)
    CASINGS_FIELD_NUMBER: _ClassVar[int]
    casings: _containers.RepeatedCompositeFieldContainer[Casing]
    def __init__(self, casings: _Optional[_Iterable[_Union[Casing, _Mapping]]] = ...) -> None: ...

class DeleteCasingRequest(_message.Message):
    __slots__ = ("casing_id", "reason")
    CASING_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    casing_id: str
    reason: str
    def __init__(self, casing_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DeleteCasingResponse(_message.Message):
    __slots__ = ("casing_id", "deleted")
    CASING_ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    casing_id: str
    deleted: bool
    def __init__(self, casing_id: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...

class ListLeadsRequest(_message.Message):
    __slots__ = ("state", "limit", "offset", "casing_id")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CASING_ID_FIELD_NUMBER: _ClassVar[int]
    state: str
    limit: int
    offset: int
    casing_id: str
    def __init__(self, state: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ..., casing_id: _Optional[str] = ...) -> None: ...

class Lead(_message.Message):
    __slots__ = ("lead_id", "casing_a", "casing_b", "agency_a", "agency_b", "incident_a", "incident_b", "score", "cmc", "non_match_frequency", "screen_score", "quality_a", "quality_b", "low_confidence", "low_confidence_reasons", "flags", "created_at", "state", "decision_id", "decided_at")
    LEAD_ID_FIELD_NUMBER: _ClassVar[int]
    CASING_A_FIELD_NUMBER: _ClassVar[int]
    CASING_B_FIELD_NUMBER: _ClassVar[int]
    AGENCY_A_FIELD_NUMBER: _ClassVar[int]
    AGENCY_B_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_A_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_B_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CMC_FIELD_NUMBER: _ClassVar[int]
    NON_MATCH_FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    SCREEN_SCORE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_A_FIELD_NUMBER: _ClassVar[int]
    QUALITY_B_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_REASONS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    lead_id: str
    casing_a: str
    casing_b: str
    agency_a: str
    agency_b: str
    incident_a: str
    incident_b: str
    score: float
    cmc: int
    non_match_frequency: float
    screen_score: float
    quality_a: Quality
    quality_b: Quality
    low_confidence: bool
    low_confidence_reasons: _containers.RepeatedScalarFieldContainer[str]
    flags: _containers.RepeatedScalarFieldContainer[str]
    created_at: str
    state: str
    decision_id: str
    decided_at: str
    def __init__(self, lead_id: _Optional[str] = ..., casing_a: _Optional[str] = ..., casing_b: _Optional[str] = ..., agency_a: _Optional[str] = ..., agency_b: _Optional[str] = ..., incident_a: _Optional[str] = ..., incident_b: _Optional[str] = ..., score: _Optional[float] = ..., cmc: _Optional[int] = ..., non_match_frequency: _Optional[float] = ..., screen_score: _Optional[float] = ..., quality_a: _Optional[_Union[Quality, _Mapping]] = ..., quality_b: _Optional[_Union[Quality, _Mapping]] = ..., low_confidence: _Optional[bool] = ..., low_confidence_reasons: _Optional[_Iterable[str]] = ..., flags: _Optional[_Iterable[str]] = ..., created_at: _Optional[str] = ..., state: _Optional[str] = ..., decision_id: _Optional[str] = ..., decided_at: _Optional[str] = ...) -> None: ...

class CorrelationProgress(_message.Message):
    __slots__ = ("pending", "running", "done", "failed")
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    pending: int
    running: int
    done: int
    failed: int
    def __init__(self, pending: _Optional[int] = ..., running: _Optional[int] = ..., done: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class ListLeadsResponse(_message.Message):
    __slots__ = ("leads", "jobs")
    LEADS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    leads: _containers.RepeatedCompositeFieldContainer[Lead]
    jobs: CorrelationProgress
    def __init__(self, leads: _Optional[_Iterable[_Union[Lead, _Mapping]]] = ..., jobs: _Optional[_Union[CorrelationProgress, _Mapping]] = ...) -> None: ...
