"""COSEM interface classes as data: attributes, their A-XDR types, and methods.

Why data and not classes with code: a client that knows the shape of each interface class (which
attribute holds the value, which one the scaler_unit, which method resets) can read *any* object of a
known class from its OBIS code and class id alone. Adding a meter of a known companion profile must
then need a table row, never new code.

Source: written from the public summaries of the DLMS UA Blue Book ("COSEM interface classes and OBIS
identification system", DLMS UA 1000-1; its public table-of-contents pages and the DLMS UA FAQ), and
the public IDIS / IS 15959 object lists that quote attribute names, types and access per class. The
versions listed are those the public companion standards (IDIS package 2, DSMR 5, IS 15959) use.
Nothing here is copied from an implementation.

Conventions:

* ``types`` is the set of A-XDR ``Data`` tags a server may answer with. Attributes the Blue Book types as
  "octet-string (date-time)" also accept the ``date-time``/``date``/``time`` tags, because meters in the
  field send both. A CHOICE of simple types ("instance specific", e.g. a Register value) is
  :data:`SIMPLE`; a CHOICE of any type (Data value) is :data:`ANY`.
* ``static`` follows the Blue Book's static/dynamic marking: a static attribute changes only by
  configuration and can be cached; a dynamic one changes by the meter's own processes.

Short-name (SN) referencing, as described publicly (Blue Book class description notation and the DLMS
UA FAQ "Short name or logical name referencing?"): each object gets a 16-bit *base name*, which is the
short name of attribute 1 (logical_name). Attribute ``i`` is at ``base + 8*(i-1)``. Methods follow the
attributes at an offset given per class in the class's table (:attr:`InterfaceClass.first_method_offset`,
the offset of method 1); method ``m`` is at ``base + first_method_offset + 8*(m-1)``. The first-method
offset is *not* always ``8*n_attributes``: several classes leave a gap (Register: 3 attributes, reset at
x+0x28), so the offset is data per class, and ``None`` where we have not been able to confirm it from a
public description (calling :func:`short_name_of_method` then refuses rather than guessing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from openami.protocols.dlms.axdr import DataType

__all__ = [
    "ANY",
    "CLASSES",
    "DATETIME",
    "OCTETS",
    "SIMPLE",
    "AttributeSpec",
    "InterfaceClass",
    "MethodSpec",
    "short_name",
    "short_name_of_method",
]

_T = DataType

#: The simple (non-compound) types: what an "instance specific" CHOICE of a Register value may be.
SIMPLE: Final[tuple[DataType, ...]] = (
    _T.NULL_DATA,
    _T.BOOLEAN,
    _T.BIT_STRING,
    _T.DOUBLE_LONG,
    _T.DOUBLE_LONG_UNSIGNED,
    _T.OCTET_STRING,
    _T.VISIBLE_STRING,
    _T.UTF8_STRING,
    _T.BCD,
    _T.INTEGER,
    _T.LONG,
    _T.UNSIGNED,
    _T.LONG_UNSIGNED,
    _T.LONG64,
    _T.LONG64_UNSIGNED,
    _T.ENUM,
    _T.FLOAT32,
    _T.FLOAT64,
    _T.DATE_TIME,
    _T.DATE,
    _T.TIME,
)
#: Any type at all (Data value, Limiter thresholds as set by the profile, ...).
ANY: Final[tuple[DataType, ...]] = (*SIMPLE, _T.ARRAY, _T.STRUCTURE, _T.COMPACT_ARRAY)
OCTETS: Final[tuple[DataType, ...]] = (_T.OCTET_STRING,)
#: "octet-string (date-time)" in the Blue Book; meters also answer with the date-time tag itself.
DATETIME: Final[tuple[DataType, ...]] = (_T.OCTET_STRING, _T.DATE_TIME)
_ARRAY = (_T.ARRAY,)
_STRUCT = (_T.STRUCTURE,)
_ENUM = (_T.ENUM,)
_BOOL = (_T.BOOLEAN,)
_U8 = (_T.UNSIGNED,)
_U16 = (_T.LONG_UNSIGNED,)
_U32 = (_T.DOUBLE_LONG_UNSIGNED,)
_I8 = (_T.INTEGER,)
_I16 = (_T.LONG,)

#: Largest short name: they are Unsigned16.
_MAX_SHORT_NAME = 0xFFFF


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute of an interface class."""

    index: int
    name: str
    types: tuple[DataType, ...]
    static: bool


@dataclass(frozen=True)
class MethodSpec:
    """One method of an interface class."""

    index: int
    name: str


@dataclass(frozen=True)
class InterfaceClass:
    """An interface class at one version: its attributes and methods, in index order."""

    class_id: int
    version: int
    name: str
    attributes: tuple[AttributeSpec, ...]
    methods: tuple[MethodSpec, ...] = ()
    #: SN offset of method 1 from the base name; None when not confirmed from a public description.
    first_method_offset: int | None = None

    def attribute(self, index: int) -> AttributeSpec:
        """The attribute with this index (KeyError if the class has none)."""
        for spec in self.attributes:
            if spec.index == index:
                return spec
        raise KeyError(f"{self.name} (class {self.class_id}) has no attribute {index}")

    def attribute_index(self, name: str) -> int:
        """The index of the attribute with this name (KeyError if none)."""
        for spec in self.attributes:
            if spec.name == name:
                return spec.index
        raise KeyError(f"{self.name} (class {self.class_id}) has no attribute {name!r}")

    def method_index(self, name: str) -> int:
        """The index of the method with this name (KeyError if none)."""
        for spec in self.methods:
            if spec.name == name:
                return spec.index
        raise KeyError(f"{self.name} (class {self.class_id}) has no method {name!r}")


def _ic(
    class_id: int,
    version: int,
    name: str,
    attributes: Iterable[tuple[str, tuple[DataType, ...], bool]],
    methods: Iterable[str | tuple[int, str]] = (),
    first_method_offset: int | None = None,
) -> InterfaceClass:
    """Build a class from rows written in index order; logical_name (static octet-string) comes first.

    Methods are numbered in order unless a row gives its index explicitly (for classes with gaps).
    """
    rows = [("logical_name", OCTETS, True), *attributes]
    return InterfaceClass(
        class_id=class_id,
        version=version,
        name=name,
        attributes=tuple(AttributeSpec(i, n, t, s) for i, (n, t, s) in enumerate(rows, start=1)),
        methods=tuple(
            MethodSpec(*m) if isinstance(m, tuple) else MethodSpec(i, m)
            for i, m in enumerate(methods, start=1)
        ),
        first_method_offset=first_method_offset,
    )


STATIC = True
DYNAMIC = False

_CLASS_LIST: tuple[InterfaceClass, ...] = (
    _ic(1, 0, "Data", [("value", ANY, DYNAMIC)]),
    _ic(
        3,
        0,
        "Register",
        [("value", SIMPLE, DYNAMIC), ("scaler_unit", _STRUCT, STATIC)],
        ["reset"],
        0x28,
    ),
    _ic(
        4,
        0,
        "Extended register",
        [
            ("value", SIMPLE, DYNAMIC),
            ("scaler_unit", _STRUCT, STATIC),
            ("status", SIMPLE, DYNAMIC),
            ("capture_time", DATETIME, DYNAMIC),
        ],
        ["reset"],
        0x38,
    ),
    _ic(
        5,
        0,
        "Demand register",
        [
            ("current_average_value", SIMPLE, DYNAMIC),
            ("last_average_value", SIMPLE, DYNAMIC),
            ("scaler_unit", _STRUCT, STATIC),
            ("status", SIMPLE, DYNAMIC),
            ("capture_time", DATETIME, DYNAMIC),
            ("start_time_current", DATETIME, DYNAMIC),
            ("period", _U32, STATIC),
            ("number_of_periods", _U16, STATIC),
        ],
        ["reset", "next_period"],
        0x48,
    ),
    # Version 1: methods 3/4 (get_buffer_by_range/index) of version 0 were withdrawn; selective access
    # on attribute 2 replaces them.
    _ic(
        7,
        1,
        "Profile generic",
        [
            ("buffer", (_T.ARRAY, _T.COMPACT_ARRAY), DYNAMIC),
            ("capture_objects", _ARRAY, STATIC),
            ("capture_period", _U32, STATIC),
            ("sort_method", _ENUM, STATIC),
            ("sort_object", _STRUCT, STATIC),
            ("entries_in_use", _U32, DYNAMIC),
            ("profile_entries", _U32, STATIC),
        ],
        ["reset", "capture"],
        0x58,
    ),
    _ic(
        8,
        0,
        "Clock",
        [
            ("time", DATETIME, DYNAMIC),
            ("time_zone", _I16, STATIC),
            ("status", _U8, DYNAMIC),
            ("daylight_savings_begin", DATETIME, STATIC),
            ("daylight_savings_end", DATETIME, STATIC),
            ("daylight_savings_deviation", _I8, STATIC),
            ("daylight_savings_enabled", _BOOL, STATIC),
            ("clock_base", _ENUM, STATIC),
        ],
        [
            "adjust_to_quarter",
            "adjust_to_measuring_period",
            "adjust_to_minute",
            "adjust_to_preset_time",
            "preset_adjusting_time",
            "shift_time",
        ],
        0x60,
    ),
    _ic(9, 0, "Script table", [("scripts", _ARRAY, STATIC)], ["execute"], 0x20),
    # Version 4 (IS 15959 and older SN meters). Methods as publicly listed; SN offsets not confirmed.
    _ic(
        12,
        4,
        "Association SN",
        [
            ("object_list", _ARRAY, STATIC),
            ("access_rights_list", _ARRAY, STATIC),
            ("security_setup_reference", OCTETS, STATIC),
            ("user_list", _ARRAY, STATIC),
            ("current_user", _STRUCT, DYNAMIC),
        ],
        # UNCERTAIN: numbering recalled from public summaries, not verified against a class table;
        # 6 and 7 are left out (reserved / withdrawn), add_user/remove_user of version 4 not listed.
        [
            (1, "reconfigure"),
            (2, "read_by_logical_name"),
            (3, "get_attributes_and_methods"),
            (4, "change_LLS_secret"),
            (5, "change_HLS_secret"),
            (8, "reply_to_HLS_authentication"),
        ],
    ),
    # Version 2 (IDIS package 2 / DSMR 5 use versions 1-2; version 2 adds user_list/current_user and
    # add_user/remove_user at the end, so a version-1 server simply lacks the tail).
    _ic(
        15,
        2,
        "Association LN",
        [
            ("object_list", _ARRAY, STATIC),
            ("associated_partners_id", _STRUCT, STATIC),
            ("application_context_name", (_T.OCTET_STRING, _T.STRUCTURE), STATIC),
            ("xDLMS_context_info", _STRUCT, STATIC),
            ("authentication_mechanism_name", (_T.OCTET_STRING, _T.STRUCTURE), STATIC),
            ("secret", OCTETS, STATIC),
            ("association_status", _ENUM, DYNAMIC),
            ("security_setup_reference", OCTETS, STATIC),
            ("user_list", _ARRAY, STATIC),
            ("current_user", _STRUCT, DYNAMIC),
        ],
        [
            "reply_to_HLS_authentication",
            "change_HLS_secret",
            "add_object",
            "remove_object",
            "add_user",
            "remove_user",
        ],
        0x60,  # uncertain: LN associations are not normally reached by SN; value as recalled
    ),
    _ic(17, 0, "SAP assignment", [("SAP_assignment_list", _ARRAY, STATIC)], ["connect_logical_device"], 0x20),
    _ic(
        18,
        0,
        "Image transfer",
        [
            ("image_block_size", _U32, STATIC),
            ("image_transferred_blocks_status", (_T.BIT_STRING,), DYNAMIC),
            ("image_first_not_transferred_block_number", _U32, DYNAMIC),
            ("image_transfer_enabled", _BOOL, STATIC),
            ("image_transfer_status", _ENUM, DYNAMIC),
            ("image_to_activate_info", _ARRAY, DYNAMIC),
        ],
        ["image_transfer_initiate", "image_block_transfer", "image_verify", "image_activate"],
        0x40,
    ),
    _ic(
        20,
        0,
        "Activity calendar",
        [
            ("calendar_name_active", OCTETS, STATIC),
            ("season_profile_active", _ARRAY, STATIC),
            ("week_profile_table_active", _ARRAY, STATIC),
            ("day_profile_table_active", _ARRAY, STATIC),
            ("calendar_name_passive", OCTETS, STATIC),
            ("season_profile_passive", _ARRAY, STATIC),
            ("week_profile_table_passive", _ARRAY, STATIC),
            ("day_profile_table_passive", _ARRAY, STATIC),
            ("activate_passive_calendar_time", DATETIME, STATIC),
        ],
        ["activate_passive_calendar"],
        0x50,
    ),
    _ic(
        21,
        0,
        "Register monitor",
        [
            ("thresholds", _ARRAY, STATIC),
            ("monitored_value", _STRUCT, STATIC),
            ("actions", _ARRAY, STATIC),
        ],
    ),
    _ic(
        22,
        0,
        "Single action schedule",
        [
            ("executed_script", _STRUCT, STATIC),
            ("type", _ENUM, STATIC),
            ("execution_time", _ARRAY, STATIC),
        ],
    ),
    # Version 0, as IDIS package 2 uses it. Version 2 appends port_reference, push_client_SAP,
    # push_protection_parameters, push_operation_method, confirmation_parameters,
    # last_confirmation_date_time and makes repetition_delay a structure.
    _ic(
        40,
        0,
        "Push setup",
        [
            ("push_object_list", _ARRAY, STATIC),
            ("send_destination_and_method", _STRUCT, STATIC),
            ("communication_window", _ARRAY, STATIC),
            ("randomisation_start_interval", _U16, STATIC),
            ("number_of_retries", _U8, STATIC),
            ("repetition_delay", _U16, STATIC),
        ],
        ["push"],
        0x38,
    ),
    # Version 1 (suites 0-2 with certificates). Version 0 had only security_activate and
    # global_key_transfer (method 2, renamed key_transfer in version 1).
    _ic(
        64,
        1,
        "Security setup",
        [
            ("security_policy", _ENUM, STATIC),
            ("security_suite", _ENUM, STATIC),
            ("client_system_title", OCTETS, DYNAMIC),
            ("server_system_title", OCTETS, STATIC),
            ("certificates", _ARRAY, STATIC),
        ],
        [
            "security_activate",
            "key_transfer",
            "key_agreement",
            "generate_key_pair",
            "generate_certificate_request",
            "import_certificate",
            "export_certificate",
            "remove_certificate",
        ],
        0x30,  # uncertain: recalled, not confirmed against a public class table
    ),
    _ic(
        70,
        0,
        "Disconnect control",
        [
            ("output_state", _BOOL, DYNAMIC),
            ("control_state", _ENUM, DYNAMIC),
            ("control_mode", _ENUM, STATIC),
        ],
        ["remote_disconnect", "remote_reconnect"],
        0x20,
    ),
    _ic(
        71,
        0,
        "Limiter",
        [
            ("monitored_value", _STRUCT, STATIC),
            ("threshold_active", SIMPLE, DYNAMIC),
            ("threshold_normal", SIMPLE, STATIC),
            ("threshold_emergency", SIMPLE, STATIC),
            ("min_over_threshold_duration", _U32, STATIC),
            ("min_under_threshold_duration", _U32, STATIC),
            ("emergency_profile", _STRUCT, STATIC),
            ("emergency_profile_group_id_list", _ARRAY, STATIC),
            ("emergency_profile_active", _BOOL, DYNAMIC),
            ("actions", _STRUCT, STATIC),
        ],
    ),
    # Version 1 (DSMR 5 / IDIS 2 wired and wireless M-Bus). SN method offset not confirmed.
    _ic(
        72,
        1,
        "M-Bus client",
        [
            ("mbus_port_reference", OCTETS, STATIC),
            ("capture_definition", _ARRAY, STATIC),
            ("capture_period", _U32, STATIC),
            ("primary_address", _U8, DYNAMIC),
            ("identification_number", _U32, DYNAMIC),
            ("manufacturer_id", _U16, DYNAMIC),
            ("version", _U8, DYNAMIC),
            ("device_type", _U8, DYNAMIC),
            ("access_number", _U8, DYNAMIC),
            ("status", _U8, DYNAMIC),
            ("alarm", _U8, DYNAMIC),
            ("configuration", _U16, STATIC),
            ("encryption_key_status", _ENUM, DYNAMIC),
        ],
        [
            "slave_install",
            "slave_deinstall",
            "capture",
            "reset_alarm",
            "synchronize_clock",
            "data_send",
            "set_encryption_key",
            "transfer_key",
        ],
    ),
)

#: class_id -> interface class (read-only).
CLASSES: Final[Mapping[int, InterfaceClass]] = MappingProxyType({c.class_id: c for c in _CLASS_LIST})


def short_name(base_name: int, attribute: int) -> int:
    """The short name of ``attribute`` (1-based) of the object whose base name is ``base_name``.

    Attribute 1 *is* the base name; each further attribute is 8 further on. Raises ValueError for an
    attribute below 1, a base name outside 0..0xFFFF or whose low 3 bits are set (base names are
    multiples of 8 so that the per-attribute offsets never collide), or a result past 0xFFFF.
    """
    if attribute < 1:
        raise ValueError(f"attribute index starts at 1, got {attribute}")
    return _offset(base_name, 8 * (attribute - 1))


def short_name_of_method(base_name: int, class_id: int, method: int) -> int:
    """The short name of ``method`` (1-based) of an object of ``class_id`` at ``base_name``.

    Method 1 is at ``base_name + first_method_offset`` of the class, then one every 8. Raises KeyError for
    a class not in :data:`CLASSES`, ValueError for a method the class does not have or whose SN offset
    is not known here.
    """
    ic = CLASSES[class_id]
    if method not in {m.index for m in ic.methods}:
        raise ValueError(f"{ic.name} (class {class_id}) has no method {method}")
    if ic.first_method_offset is None:
        raise ValueError(f"short-name offset of {ic.name} (class {class_id}) methods is not known")
    return _offset(base_name, ic.first_method_offset + 8 * (method - 1))


def _offset(base_name: int, offset: int) -> int:
    if not 0 <= base_name <= _MAX_SHORT_NAME or base_name % 8:
        raise ValueError(f"base name must be a multiple of 8 in 0..0xFFFF, got {base_name:#x}")
    result = base_name + offset
    if result > _MAX_SHORT_NAME:
        raise ValueError(f"short name {result:#x} out of range (base {base_name:#x} + {offset:#x})")
    return result
