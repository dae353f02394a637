#!/usr/bin/env python3
"""Generate the binary documents (PDF and DOCX) of the sample knowledge base.

The sample corpus in ``corpora/`` describes "Meridian Robotics", a fictional
maker of warehouse robots. Most documents are plain files checked in as-is
(Markdown, text, HTML, CSV, JSONL). The PDF and DOCX documents are generated
by this script from the text held below, so their content can be reviewed in
a diff.

Usage::

    python scripts/make_sample_corpus.py            # writes into ./corpora
    python scripts/make_sample_corpus.py --out DIR  # writes into DIR

The output is deterministic: creation dates and other metadata are fixed, and
DOCX zip entries get a fixed timestamp, so re-running produces byte-identical
files.

Requires ``fpdf2`` and ``python-docx``. PDFs use the core Helvetica font, so
all PDF text must be Latin-1.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from docx import Document
from docx.shared import Pt
from fpdf import FPDF
from fpdf.enums import XPos, YPos

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXED_DATE = datetime(2025, 6, 1, 9, 0, 0, tzinfo=timezone.utc)
AUTHOR = "Meridian Robotics"

# ---------------------------------------------------------------------------
# PDF content. Each document is a list of pages; each page is a list of blocks:
#   ("h1", text) ("h2", text) ("p", text) ("bullets", [text, ...])
#   ("table", (col_width, ...), [header_row, row, ...])
# Every page starts on a new PDF page; the script fails if a page overflows.
# ---------------------------------------------------------------------------

MR400_MANUAL = {
    "path": "products/mr400-manual.pdf",
    "title": "MR-400 Autonomous Mobile Robot - User Manual",
    "subject": "User manual MR400-UM-EN, revision C",
    "footer": "MR400-UM-EN Rev. C - March 2025 - Meridian Robotics, S.A.",
    "pages": [
        [
            ("h1", "MR-400 Autonomous Mobile Robot - User Manual"),
            ("p", "Document MR400-UM-EN, revision C, March 2025. Applies to robots with firmware 7.1 "
                  "or later. Keep this manual available to every operator and maintenance technician."),
            ("h2", "1. About the MR-400"),
            ("p", "The MR-400 is an autonomous mobile robot (AMR) for moving carts, racks and roller "
                  "containers in warehouses and factories. It navigates using the natural features of "
                  "the building, so no reflectors, magnetic tape or floor markers are needed. Missions "
                  "are assigned by FleetOS, the Meridian fleet management software."),
            ("h2", "2. Safety notes"),
            ("bullets", [
                "Only trained operators may start missions or use manual mode.",
                "Never ride on the robot or place loads that extend beyond the top plate by more than 50 mm.",
                "Keep the safety scanner windows clean and unobstructed at all times.",
                "The robot meets ISO 3691-4 for driverless industrial trucks when operated as described here.",
            ]),
            ("h2", "3. Technical specifications"),
            ("table", (70, 110), [
                ("Parameter", "Value"),
                ("Rated payload", "450 kg"),
                ("Maximum speed", "2.0 m/s (1.2 m/s with loads above 300 kg)"),
                ("Dimensions (L x W x H)", "1,020 x 720 x 310 mm"),
                ("Robot weight without load", "185 kg"),
                ("Battery", "48 V LiFePO4, 2.4 kWh"),
                ("Runtime", "Up to 10 hours at a typical duty cycle"),
                ("Charging time (0 to 80%)", "75 minutes on the CD-40 dock"),
                ("Sensors", "Two 270 degree safety lidars, one 3D depth camera"),
                ("Docking accuracy", "+/- 10 mm"),
                ("Ingress protection", "IP54"),
                ("Operating temperature", "0 to 45 °C"),
                ("Wireless", "Wi-Fi 6 (802.11ax), 5 GHz band"),
            ]),
        ],
        [
            ("h1", "4. Installation and site requirements"),
            ("p", "A Meridian field engineer commissions every new site. Before commissioning, the "
                  "customer must make sure the site meets the requirements below."),
            ("h2", "4.1 Floors and aisles"),
            ("bullets", [
                "Floor: sealed concrete or epoxy, clean and dry; maximum step height 10 mm, maximum gap 20 mm.",
                "Maximum ramp gradient: 3% with load, 6% without load.",
                "Minimum aisle width for one-way traffic: 1.4 m.",
                "Minimum aisle width for two-way traffic: 2.3 m.",
                "Glass walls and mirrors below 1 m height must be marked with a matt strip for the lidars.",
            ]),
            ("h2", "4.2 Charging docks"),
            ("p", "Each CD-40 dock needs a free area of 1.5 m in front of it and a dedicated 230 V, 16 A "
                  "socket within 2 m. Plan one dock for every four robots in two-shift operation."),
            ("h2", "4.3 Network"),
            ("p", "Robots connect over Wi-Fi in the 5 GHz band. The signal must be at least -67 dBm along "
                  "all robot routes. Open TCP port 8883 from the robot VLAN to the FleetOS server."),
            ("h1", "5. Operation"),
            ("h2", "5.1 Switching on"),
            ("p", "Press and hold the green power button on the rear panel for 3 seconds. The robot runs a "
                  "self-test of about 90 seconds, localizes itself on the site map and reports to FleetOS "
                  "as available."),
            ("h2", "5.2 Status light"),
            ("table", (45, 135), [
                ("Light", "Meaning"),
                ("Solid green", "Ready and waiting for a mission"),
                ("Pulsing blue", "Executing a mission"),
                ("Solid yellow", "Waiting: path blocked or waiting for a dock or elevator"),
                ("Pulsing purple", "Charging"),
                ("Solid white", "Manual mode (handheld pendant connected)"),
                ("Flashing red", "Error - see the error code on the FleetOS robot page"),
            ]),
            ("h2", "5.3 Manual mode and emergency stop"),
            ("p", "Connect the HP-2 handheld pendant to move the robot manually; speed is limited to "
                  "0.5 m/s in manual mode. After an emergency stop, twist the red button to release it, "
                  "then press the blue reset button on the rear panel."),
        ],
        [
            ("h1", "6. Troubleshooting and error codes"),
            ("p", "When the status light flashes red, the robot stops and shows an error code on the "
                  "FleetOS robot page and on the pendant display. Use the table below before calling support."),
            ("table", (18, 44, 46, 72), [
                ("Code", "Description", "Likely cause", "What to do"),
                ("E-101", "Localization lost", "Layout changed since mapping",
                 "Drive to a known position in manual mode and select Relocalize in FleetOS."),
                ("E-117", "Path blocked for more than 60 s", "Pallet or obstacle in the aisle",
                 "Remove the obstacle. The robot resumes its mission automatically."),
                ("E-205", "Drive motor overcurrent", "Overload or debris around a wheel",
                 "Check the load is within the rated payload and clean the wheels."),
                ("E-217", "Wheel encoder mismatch", "Loose encoder cable or failed encoder",
                 "Power off and check connector J14 on the drive controller. If the error returns, "
                 "replace the wheel encoder module."),
                ("E-230", "Brake release fault", "Brake module failure",
                 "Do not push the robot. Contact Meridian support."),
                ("E-301", "Battery over-temperature", "Cell temperature above 55 °C",
                 "Park the robot in a cool area for 30 minutes. Missions resume below 45 °C."),
                ("E-312", "Charging contact fault", "Dirty or worn contacts",
                 "Clean the contact plate with isopropyl alcohol; replace it if worn."),
                ("E-404", "Fleet server connection lost", "No Wi-Fi for more than 120 s",
                 "The robot finishes its current segment and stops. Check the access points."),
                ("E-420", "Firmware mismatch", "Robot firmware older than FleetOS requires",
                 "Update the robot in FleetOS under Robots > Firmware."),
            ]),
            ("h2", "6.1 Clearing errors"),
            ("p", "Most errors are cleared by pressing the blue reset button once the cause is fixed. "
                  "Drive errors (E-2xx codes) require a full restart: hold the power button for 10 seconds, "
                  "wait until all lights are off, then switch on again."),
        ],
        [
            ("h1", "7. Maintenance"),
            ("p", "Regular maintenance keeps the MR-400 safe and available. Log every maintenance task in "
                  "FleetOS so that the service history travels with the robot."),
            ("table", (50, 130), [
                ("Interval", "Task"),
                ("Daily", "Visual check; clean lidar windows with a dry microfibre cloth"),
                ("Weekly", "Test the emergency stop buttons and bumper switches"),
                ("Every 500 operating hours", "Clean charging contacts; inspect wheel treads for cuts"),
                ("Every 2,000 operating hours", "Replace the drive wheel treads (both sides)"),
                ("Every 12 months", "Full service and brake test by a certified technician"),
            ]),
            ("h2", "7.1 Storage and transport"),
            ("p", "When a robot is stored for more than two weeks, charge the battery to about 50% and "
                  "store it between 15 and 25 °C. Recharge stored robots every 3 months. Transport the "
                  "robot only on its original shipping pallet, strapped at the four lifting points."),
            ("h2", "7.2 Disposal"),
            ("p", "Return end-of-life batteries to Meridian through the RMA process. Do not dispose of the "
                  "robot or its battery with household or general industrial waste."),
            ("h1", "8. Support"),
            ("p", "For help, open a case in the Meridian customer portal and include the robot serial number, "
                  "which is printed on the label behind the rear service flap (format MR4-YYWW-NNNN)."),
        ],
    ],
}

TRAVEL_POLICY = {
    "path": "finance/travel-expense-policy.pdf",
    "title": "Travel and Expense Policy",
    "subject": "Policy FIN-POL-021, version 5.0",
    "footer": "FIN-POL-021 Travel and Expense Policy v5.0 - Classification: Internal",
    "pages": [
        [
            ("h1", "Travel and Expense Policy"),
            ("p", "Policy number FIN-POL-021, version 5.0, effective 1 April 2025. Owner: Finance "
                  "(Chief Financial Officer). This policy applies to all employees of Meridian Robotics "
                  "travelling on company business, and to candidates and contractors whose travel we pay."),
            ("h2", "1. Principles"),
            ("p", "Spend company money as if it were your own. Choose the most economical option that "
                  "still lets you travel safely and work effectively. Consider a video call before "
                  "booking any trip."),
            ("h2", "2. Approval and booking"),
            ("bullets", [
                "Every trip must be approved by your manager in Navan before anything is booked.",
                "International trips also need approval from your department head.",
                "Book flights, hotels, trains and rental cars through Navan, our travel management tool.",
                "Book flights at least 14 days before departure whenever possible.",
            ]),
            ("h2", "3. Class of travel"),
            ("table", (80, 100), [
                ("Journey", "Allowed class"),
                ("Flights up to 6 hours", "Economy"),
                ("Flights over 6 hours", "Premium economy"),
                ("Flights over 10 hours", "Business class, with VP approval"),
                ("Train journeys", "Standard class; first class for journeys over 3 hours"),
                ("Rental cars", "Compact category; larger cars for 3 or more travellers"),
            ]),
            ("p", "Airline upgrades paid with personal loyalty points are allowed. Loyalty programme "
                  "membership must never influence the choice of airline or hotel."),
        ],
        [
            ("h1", "4. Accommodation"),
            ("p", "Book a standard room in a business hotel close to the office or customer site. The "
                  "nightly rate, including taxes but excluding breakfast, must not exceed the cap below. "
                  "In cities not listed the cap is EUR 130 or the local equivalent."),
            ("table", (60, 60, 60), [
                ("City", "Country", "Nightly cap"),
                ("Lisbon", "Portugal", "EUR 140"),
                ("Porto", "Portugal", "EUR 120"),
                ("Madrid", "Spain", "EUR 150"),
                ("Munich", "Germany", "EUR 180"),
                ("London", "United Kingdom", "GBP 220"),
                ("Austin", "United States", "USD 210"),
                ("Chicago", "United States", "USD 240"),
                ("New York", "United States", "USD 320"),
                ("Shanghai", "China", "CNY 1,100"),
                ("Shenzhen", "China", "CNY 900"),
                ("Tokyo", "Japan", "JPY 24,000"),
            ]),
            ("p", "During trade fairs (for example LogiMAT or ProMat) Finance may approve higher rates "
                  "in advance. Airbnb and similar rentals are allowed for stays of 5 nights or more if "
                  "the total cost is below the hotel cap."),
            ("h1", "5. Meals and daily allowance"),
            ("p", "Instead of claiming meal receipts, travellers receive a daily meal allowance (per diem) "
                  "for each full travel day. Half the amount is paid for the departure and return days."),
            ("table", (90, 90), [
                ("Destination", "Daily meal allowance"),
                ("Portugal", "EUR 45"),
                ("Rest of Europe", "EUR 60"),
                ("United States", "USD 75"),
                ("China", "CNY 400"),
            ]),
            ("p", "Client entertainment is not covered by the per diem and is reimbursed at cost up to "
                  "EUR 90 per person, with the names of all guests listed on the claim."),
        ],
        [
            ("h1", "6. Expense claims"),
            ("bullets", [
                "Submit expenses in SAP Concur within 30 days after the end of the trip.",
                "Attach an itemised receipt for every expense above EUR 25.",
                "If a receipt is lost, complete the lost receipt declaration, form FIN-LR-1. This can be "
                "used at most twice per calendar year.",
                "Claims are approved by your manager and audited by Accounts Payable before payment.",
                "Approved claims are paid with the next monthly salary.",
            ]),
            ("h1", "7. Private car use"),
            ("p", "Using your own car for business trips must be approved in advance and is only allowed "
                  "when it is cheaper than the train or a rental car. Mileage is reimbursed at:"),
            ("table", (60, 120), [
                ("Country", "Mileage rate"),
                ("Portugal", "EUR 0.40 per km"),
                ("United States", "USD 0.70 per mile"),
                ("China", "CNY 2.50 per km"),
            ]),
            ("h1", "8. Corporate card"),
            ("p", "Employees who travel more than four times a year receive an American Express corporate "
                  "card. Card transactions must be reconciled in SAP Concur by the 5th business day of the "
                  "following month. Personal use of the corporate card is not allowed."),
            ("h1", "9. Not reimbursed"),
            ("bullets", [
                "Minibar, in-room films, spa and laundry for trips shorter than 5 nights.",
                "Traffic and parking fines.",
                "Seat upgrades and extra-legroom seats on flights up to 6 hours.",
                "Personal travel insurance: all travellers are covered by the company policy TRV-884213.",
            ]),
            ("p", "Questions about this policy: travel@meridian-robotics.example."),
        ],
    ],
}

PDF_DOCS = [MR400_MANUAL, TRAVEL_POLICY]

# ---------------------------------------------------------------------------
# DOCX content. Blocks: ("h1", text) ("h2", text) ("p", text)
#   ("bullets", [text, ...]) ("table", [header_row, row, ...])
# ---------------------------------------------------------------------------

ONBOARDING_GUIDE = {
    "path": "handbook/onboarding-guide.docx",
    "title": "New Employee Onboarding Guide",
    "subject": "HR-GUIDE-002",
    "blocks": [
        ("title", "New Employee Onboarding Guide"),
        ("p", "Guide HR-GUIDE-002, version 3.2, May 2025. Owner: People Operations."),
        ("h1", "1. Welcome to Meridian Robotics"),
        ("p", "Welcome! This guide walks you through your first weeks at Meridian Robotics, from your first "
              "morning at the office to the end of your probation period. Your manager and your onboarding "
              "buddy will help you along the way."),
        ("h1", "2. Before your first day"),
        ("bullets", [
            "Sign your contract and complete your personal details in Workday.",
            "Upload a passport-style photo for your badge.",
            "Read the Code of Business Conduct (HR-POL-003).",
            "Your laptop is prepared by IT and handed over on your first day; it is not shipped in advance.",
        ]),
        ("h1", "3. Your first week"),
        ("p", "The first week follows the same schedule in every office. Times are local."),
        ("table", [
            ("Day", "Time", "Activity", "Where"),
            ("Monday", "09:30", "Welcome coffee, badge photo and building tour", "Reception"),
            ("Monday", "11:00", "IT setup: laptop and two YubiKeys", "IT Service Desk"),
            ("Monday", "14:00", "Meet your onboarding buddy", "Your team area"),
            ("Tuesday", "10:00", "Company and product overview", "Main meeting room"),
            ("Wednesday", "09:00", "Robot Floor Safety training (3 hours)", "Test floor"),
            ("Thursday", "All day", "Team time and first tasks", "Your team area"),
            ("Friday", "16:00", "Week-one check-in with your manager", "Your manager's choice"),
        ]),
        ("h1", "4. Mandatory training"),
        ("p", "Complete these courses in the Meridian Academy learning portal. Overdue training blocks "
              "the end of probation."),
        ("table", [
            ("Course", "Code", "Who", "Deadline"),
            ("Security Awareness Basics", "SEC-100", "Everyone", "Within 14 days of start"),
            ("Code of Conduct", "COC-100", "Everyone", "Within 30 days of start"),
            ("Robot Floor Safety", "RFS-101", "Anyone entering a test floor", "Before first access"),
            ("Data Protection (GDPR and PIPL)", "DPR-110", "Everyone", "Within 30 days of start"),
            ("Export Control Basics", "EXP-120", "Sales and engineering", "Within 60 days of start"),
        ]),
        ("h1", "5. Your onboarding buddy"),
        ("h2", "5.1 What a buddy does"),
        ("p", "Your buddy is an experienced colleague from a neighbouring team who answers the questions "
              "you may not want to ask your manager: where things are, who knows what, how things really "
              "work. The buddy programme runs for your first 90 days."),
        ("h2", "5.2 Buddy lunches"),
        ("p", "You and your buddy can expense one lunch every month of the programme, up to EUR 20 per "
              "person. Use the expense type \"Buddy lunch\" in SAP Concur."),
        ("h1", "6. Probation and goals"),
        ("h2", "6.1 Probation period"),
        ("p", "The standard probation period is 90 days in all offices. For senior technical and "
              "management roles in Lisbon the probation period is 180 days, as allowed by Portuguese law."),
        ("h2", "6.2 The 30-60-90 plan"),
        ("p", "In your first week you agree a 30-60-90 day plan with your manager in Workday. You review it "
              "together at each milestone; the day-90 review also confirms the end of probation."),
        ("h1", "7. Who to contact"),
        ("table", [
            ("Topic", "Contact"),
            ("Onboarding questions", "onboarding@meridian-robotics.example"),
            ("Payroll and benefits", "People Operations, ext. 1024"),
            ("Laptop and accounts", "IT Service Desk, ext. 4357"),
        ]),
    ],
}

PROCUREMENT_POLICY = {
    "path": "finance/procurement-policy.docx",
    "title": "Procurement Policy",
    "subject": "FIN-POL-009",
    "blocks": [
        ("title", "Procurement Policy"),
        ("p", "Policy FIN-POL-009, version 2.1, effective 1 January 2025. Owner: Procurement "
              "(Head of Procurement: Bruno Teixeira)."),
        ("h1", "1. Purpose and scope"),
        ("p", "This policy governs how Meridian Robotics buys goods and services, from robot components "
              "to office supplies. It applies to every purchase paid by any Meridian entity. Employee "
              "travel expenses are covered by the Travel and Expense Policy instead."),
        ("h1", "2. Approval thresholds"),
        ("p", "Amounts are per purchase, excluding VAT, for the full contract value over its whole term. "
              "Splitting a purchase to stay below a threshold is a breach of this policy."),
        ("table", [
            ("Amount (EUR, excl. VAT)", "Approver", "Quotes required"),
            ("Up to 5,000", "Budget owner", "1 quote"),
            ("5,000.01 to 25,000", "Department head and Finance Business Partner", "2 quotes"),
            ("25,000.01 to 100,000", "Chief Financial Officer", "3 written quotes"),
            ("Above 100,000", "CEO and CFO jointly", "Formal tender (RFP) run by Procurement"),
        ]),
        ("h1", "3. Purchase orders"),
        ("h2", "3.1 No PO, no pay"),
        ("p", "Every purchase needs an approved purchase order (PO) in Coupa before the supplier starts "
              "work or ships goods. Accounts Payable returns invoices without a valid PO number to the "
              "supplier unpaid."),
        ("h2", "3.2 Exceptions"),
        ("p", "Utilities, rent, taxes and payroll-related payments do not need a PO. Emergency repairs on "
              "the test floor may be ordered by phone, but a retrospective PO must be raised within 2 "
              "business days."),
        ("h1", "4. Supplier onboarding"),
        ("h2", "4.1 Due diligence"),
        ("p", "New suppliers complete the supplier questionnaire in Coupa and are screened against "
              "sanctions lists. Suppliers of robot components also need an ISO 9001 certificate."),
        ("h2", "4.2 Bank details"),
        ("p", "Bank details are verified by a call-back to a phone number already on file, never to a "
              "number given in the same email. Onboarding normally takes 5 business days."),
        ("h1", "5. Preferred suppliers"),
        ("p", "Use the preferred suppliers below for these categories. Buying from another supplier in a "
              "covered category needs written approval from Procurement."),
        ("table", [
            ("Category", "Supplier", "Contract", "Expires"),
            ("Lidar and safety scanners", "Lumora Sensing GmbH", "PSA-2023-014", "2026-06-30"),
            ("Battery cells and packs", "Voltaris Energy Co., Ltd.", "PSA-2024-002", "2027-01-31"),
            ("Freight and logistics (EMEA)", "TransIberia Logística, S.A.", "PSA-2022-031", "2025-12-31"),
            ("Laptops and IT hardware", "Northgate IT Solutions", "PSA-2024-019", "2026-09-30"),
            ("Office supplies", "Papelaria Central, Lda.", "PSA-2023-027", "2026-03-31"),
        ]),
        ("h1", "6. Payment terms"),
        ("p", "Meridian's standard payment terms are Net 45 days from the invoice date. Small suppliers "
              "with fewer than 50 employees are paid on Net 30 terms. Payment runs take place every "
              "Tuesday and Friday."),
        ("h1", "7. Sustainability and ethics"),
        ("p", "Suppliers must sign the Meridian Supplier Code of Conduct. When comparing quotes, "
              "Procurement weighs price at 60%, quality and delivery at 25% and sustainability at 15%. "
              "Employees involved in a tender must follow the gift rules of the Code of Business Conduct."),
    ],
}

DOCX_DOCS = [ONBOARDING_GUIDE, PROCUREMENT_POLICY]


# ---------------------------------------------------------------------------
# PDF writer
# ---------------------------------------------------------------------------

class _ManualPDF(FPDF):
    footer_text = ""

    def footer(self):
        self.set_y(-15)
        self.set_font("Helvetica", size=8)
        self.set_text_color(110, 110, 110)
        self.cell(0, 10, f"{self.footer_text} - Page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0, 0, 0)


def build_pdf(doc: dict) -> bytes:
    pdf = _ManualPDF(format="A4")
    pdf.footer_text = doc["footer"]
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_producer("Meridian Robotics documentation pipeline")
    pdf.set_creator("scripts/make_sample_corpus.py")
    pdf.set_author(AUTHOR)
    pdf.set_title(doc["title"])
    pdf.set_subject(doc["subject"])
    pdf.set_lang("en")
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=20)
    width = pdf.epw

    for number, page in enumerate(doc["pages"], start=1):
        pdf.add_page()
        for kind, *args in page:
            if kind == "h1":
                pdf.set_font("Helvetica", "B", 15)
                pdf.multi_cell(width, 8, args[0], new_x=XPos.LMARGIN, new_y=YPos.NEXT)
                pdf.ln(2)
            elif kind == "h2":
                pdf.ln(1)
                pdf.set_font("Helvetica", "B", 11.5)
                pdf.multi_cell(width, 6, args[0], new_x=XPos.LMARGIN, new_y=YPos.NEXT)
                pdf.ln(1)
            elif kind == "p":
                pdf.set_font("Helvetica", size=10)
                pdf.multi_cell(width, 5, args[0], new_x=XPos.LMARGIN, new_y=YPos.NEXT)
                pdf.ln(2)
            elif kind == "bullets":
                pdf.set_font("Helvetica", size=10)
                for item in args[0]:
                    pdf.cell(6, 5, "-")
                    pdf.multi_cell(width - 6, 5, item, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
                    pdf.ln(0.5)
                pdf.ln(1.5)
            elif kind == "table":
                widths, rows = args
                pdf.set_font("Helvetica", size=9)
                with pdf.table(col_widths=widths, width=sum(widths), align="LEFT",
                               line_height=4.6, padding=1.2) as table:
                    for row in rows:
                        r = table.row()
                        for value in row:
                            r.cell(value)
                pdf.ln(3)
            else:
                raise ValueError(f"unknown block type {kind!r}")
        if pdf.page_no() != number:
            raise RuntimeError(f"{doc['path']}: content of page {number} overflows onto the next page")

    return bytes(pdf.output())


# ---------------------------------------------------------------------------
# DOCX writer
# ---------------------------------------------------------------------------

def _normalise_zip(data: bytes) -> bytes:
    """Rewrite a zip archive with fixed timestamps so the output is reproducible."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            new = zipfile.ZipInfo(info.filename, date_time=(2025, 6, 1, 9, 0, 0))
            new.compress_type = zipfile.ZIP_DEFLATED
            new.external_attr = 0o644 << 16
            dst.writestr(new, src.read(info.filename))
    return out.getvalue()


def build_docx(doc: dict) -> bytes:
    document = Document()
    style = document.styles["Normal"]
    style.font.name = "Calibri"
    style.font.size = Pt(11)

    props = document.core_properties
    props.title = doc["title"]
    props.subject = doc["subject"]
    props.author = AUTHOR
    props.last_modified_by = AUTHOR
    props.created = FIXED_DATE.replace(tzinfo=None)
    props.modified = FIXED_DATE.replace(tzinfo=None)
    props.last_printed = FIXED_DATE.replace(tzinfo=None)
    props.revision = 1
    props.comments = "Generated by scripts/make_sample_corpus.py"

    for kind, *args in doc["blocks"]:
        if kind == "title":
            document.add_heading(args[0], level=0)
        elif kind == "h1":
            document.add_heading(args[0], level=1)
        elif kind == "h2":
            document.add_heading(args[0], level=2)
        elif kind == "p":
            document.add_paragraph(args[0])
        elif kind == "bullets":
            for item in args[0]:
                document.add_paragraph(item, style="List Bullet")
        elif kind == "table":
            rows = args[0]
            table = document.add_table(rows=len(rows), cols=len(rows[0]))
            table.style = "Table Grid"
            for i, row in enumerate(rows):
                for j, value in enumerate(row):
                    cell = table.cell(i, j)
                    cell.text = value
                    if i == 0:
                        for run in cell.paragraphs[0].runs:
                            run.bold = True
        else:
            raise ValueError(f"unknown block type {kind!r}")

    buf = io.BytesIO()
    document.save(buf)
    return _normalise_zip(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "corpora",
                        help="corpus directory to write into (default: corpora/)")
    args = parser.parse_args(argv)

    for doc in PDF_DOCS:
        target = args.out / doc["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(build_pdf(doc))
        print(f"wrote {target} ({len(doc['pages'])} pages)")
    for doc in DOCX_DOCS:
        target = args.out / doc["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(build_docx(doc))
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
