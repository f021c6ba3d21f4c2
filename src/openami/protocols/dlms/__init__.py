"""DLMS/COSEM (IEC 62056), written here from the public descriptions of the standard. Sans-IO.

Layers, bottom up: ``hdlc`` (frame format type 3, HCS/FCS, stream splitting, segmentation) and
``wrapper`` (IEC 62056-47 TCP/UDP header) carry APDUs; ``gbt`` reassembles General Block Transfer;
``security`` applies security suite 0 (AES-GCM-128); ``axdr`` encodes and decodes the DLMS data types;
``obis`` names objects; ``apdu`` parses xDLMS APDUs; ``notification`` turns push messages into OBIS values.
Nothing here opens a socket, sleeps or reads the clock, and every parser ends in a value or a typed
:class:`~openami.protocols.dlms.errors.DecodeError` (bounded: no input makes it hang or raise anything else).
"""
