"""Public example readouts, byte for byte, with where they were published.

Only the meters' transmitted data is reproduced (facts of the protocol, not code).
"""

from __future__ import annotations

# LEM EM4TII manual, section 4.2.9 "Examples of read-outs", V1.0, 5 November 2020:
# https://manualshive.com/en/manual/lem/em4tii/em4tii_manual_1874544-27.html
# The manual prints the control characters as <STX>, <ETX>, <CR><LF> and the BCC as the character '+'.
EMH_LINES = [
    "1-0:1.8.0*255(000000000.0*kWh)",
    "1-0:2.8.0*255(000000000.0*kWh)",
    "1-0:3.8.0*255(000000000.0*kvarh)",
    "1-0:4.8.0*255(000000000.0*kvarh)",
    "0-0:F.F.0*255(00000000)",
    "1-0:0.0.1*255()",
    "1-0:0.2.0*255(10600000)",
    "1-0:0.9.1*255(140253)",
    "1-0:0.9.2*255(121221)",
    "0-0:C.1.0*255(03878504)",
    "0-0:C.72.1*255()",
    "0-0:C.72.2*255()",
    "1-0:0.8.4*255(5*min)",
    "1-0:0.3.0*255(6.00*Imp/kWh)",
    "1-0:0.2.1*1(121120??)",
    "1-0:0.2.1*50(121120??)",
    "0-0:C.90.2*255(9F139CC2)",
    "1-0:C.1.9*255(Point-ID)",
    "!",
]
EMH_REQUEST = b"/?!\r\n"
EMH_IDENTIFICATION = b"/EMH5\\@D4EM4TIIW001--\r\n"
EMH_ACK = b"\x06050\r\n"
EMH_DATA = b"\x02" + "\r\n".join(EMH_LINES).encode("ascii") + b"\r\n\x03+"
EMH_READOUT = EMH_IDENTIFICATION + EMH_DATA
EMH_CAPTURE = EMH_REQUEST + EMH_IDENTIFICATION + EMH_ACK + EMH_DATA

# Programming-mode messages of the same manual page: (message after SOH/STX, printed BCC character).
EMH_PROGRAMMING_BCC = [
    (b"B0\x03", "q"),
    (b"P0\x02()\x03", "`"),
    (b"P1\x02(00000000)\x03", "a"),
    (b"R5\x020.9.2()\x03", "\\"),
    (b"0.9.2(130103)\x03", "9"),
    (b"R5\x020.9.1()\x03", "_"),
    (b"0.9.1(101415)\x03", ":"),
    (b"W5\x021-0:0.9.129*255(1301031605000002)(00000000)\x03", "^"),
]

# Landis+Gyr ZMD readout posted in https://github.com/pwitab/iec62056-21/issues/16 (2021-01-04), the
# first lines, as text without control characters (the issue shows no BCC).
ZMD_TEXT = (
    "/LGZ5\\2ZMD4054459.B40\r\n"
    "F.F(00000000)\r\n"
    "0.9.1(23:16:43)\r\n"
    "0.9.2(21-01-04)\r\n"
    "0.0.0()\r\n"
    "C.1.0(54800102)\r\n"
    "C.90.1(54800102)\r\n"
    "C.90.2(01102)\r\n"
    "0.2.2(B21)\r\n"
    "0.1.0(04)\r\n"
    "0.1.0*12(21-01-01 00:00)\r\n"
    "0.1.0&12(20-12-30 16:02)\r\n"
    "1.8.1(0302.8260*kWh)\r\n"
    "1.8.1*12(0075.5341*kWh)\r\n"
    "1.8.1&12(0000.0000*kWh)\r\n"
    "1.8.0(0302.8260*kWh)\r\n"
    "5.8.1(0064.3714*kvarh)\r\n"
    "!\r\n"
).encode("ascii")
