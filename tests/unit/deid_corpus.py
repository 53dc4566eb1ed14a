"""A corpus of identifier forms as they turn up in radiology report free text (written for the tests).

``FORMS``: (kind, sentence, secrets): after de-identification none of ``secrets`` may remain
(case-insensitive; digits compared without separators for numbers). ``CLINICAL``: sentences that must
come out unchanged (measurements, vertebrae, segments, fractions, scores).
"""

from __future__ import annotations

import re

FORMS: list[tuple[str, str, list[str]]] = [
    # phone numbers
    ("phone", "Results phoned to (555) 231-4477 at 14:05.", ["231-4477", "2314477"]),
    ("phone", "Call back on 555-231-4478 if worse.", ["555-231-4478"]),
    ("phone", "Ward extension 555.231.4479.", ["555.231.4479"]),
    ("phone", "Contact +1 555 231 4480 (daughter).", ["231 4480"]),
    ("phone", "GP surgery 020 7946 0958.", ["7946 0958"]),
    ("phone", "Mobile 07700 900461, text first.", ["07700 900461", "900461"]),
    ("phone", "Tel: +44 (0)161 496 0753.", ["496 0753"]),
    ("phone", "Tel. +44 20 7946 0321 after 5pm.", ["7946 0321"]),
    ("phone", "Reachable at 5552314481.", ["5552314481"]),
    ("phone", "Pager 0161-496-0754.", ["496-0754"]),
    ("phone", "Dr Ahmed's line is 555 231 4482.", ["231 4482"]),
    ("phone", "Phone: (555)231-4483", ["231-4483"]),
    ("phone", "Fax 1-555-231-4484 for the report.", ["231-4484"]),
    ("phone", "Telephone +49 30 901820 of the referring clinic.", ["901820"]),
    # national and record numbers
    ("ssn", "SSN 078-05-1120 on file.", ["078-05-1120"]),
    ("ssn", "Social security number 219-09-9999.", ["219-09-9999"]),
    ("ssn", "SSN: 536-22-8726", ["536-22-8726"]),
    ("nhs", "NHS number 943 476 5919.", ["943 476 5919", "9434765919"]),
    ("nhs", "NHS No: 401-023-2137", ["401-023-2137"]),
    ("nhs", "nhs 4010232137 confirmed", ["4010232137"]),
    ("mrn", "MRN 482913.", ["482913"]),
    ("mrn", "MRN: 731904, bed 4.", ["731904"]),
    ("mrn", "Medical record number 5521907.", ["5521907"]),
    ("mrn", "Hospital number RX4471920.", ["RX4471920"]),
    ("mrn", "Patient ID: HX-20931.", ["HX-20931"]),
    ("mrn", "Record no. 66120931 reviewed.", ["66120931"]),
    ("mrn", "MRN#990321 prior study.", ["990321"]),
    ("mrn", "Chart 448812 reviewed.", ["448812"]),
    ("mrn", "Accession number A77120934.", ["A77120934"]),
    ("mrn", "Ref: QX88213 from outside hospital.", ["QX88213"]),
    ("mrn", "ID 123456 on the request.", ["123456"]),
    ("card", "Paid with 4111 1111 1111 1111.", ["4111 1111 1111 1111"]),
    ("iban", "Refund to GB82 WEST 1234 5698 7654 32.", ["GB82 WEST", "5698 7654"]),
    ("ip", "Images pushed from 192.168.14.201.", ["192.168.14.201"]),
    # e-mail
    ("email", "Copy to jane.whitfield@nhs.net please.", ["jane.whitfield", "whitfield@"]),
    ("email", "Questions: radiology-desk@stmarys.example.org", ["radiology-desk@"]),
    ("email", "Sent to p.okonkwo+ct@hospital.co.uk.", ["okonkwo"]),
    ("email", "Email J_Brennan@clinic.ie for the old films.", ["J_Brennan"]),
    # dates in many spellings
    ("date", "Compared with the CT of 3rd of March 2021.", ["3rd of March 2021", "March 2021"]),
    ("date", "Prior study 03-Mar-2021.", ["03-Mar-2021"]),
    ("date", "Prior study 3-Mar-21 showed the same.", ["3-Mar-21"]),
    ("date", "Seen on 03/03/2021.", ["03/03/2021"]),
    ("date", "Seen on 2021-03-03 as well.", ["2021-03-03"]),
    ("date", "Born 12.04.1937.", ["12.04.1937"]),
    ("date", "DOB 04/12/37.", ["04/12/37"]),
    ("date", "Admitted March 3, 2021.", ["March 3, 2021"]),
    ("date", "Admitted March 3rd 2021.", ["March 3rd 2021"]),
    ("date", "Admitted 3 March 2021.", ["3 March 2021"]),
    ("date", "Follow-up booked for 21st June.", ["21st June"]),
    ("date", "Follow-up on the 2nd of February.", ["2nd of February"]),
    ("date", "Last scan in September 2019.", ["September 2019"]),
    ("date", "Last scan Sept. 14th.", ["Sept. 14th"]),
    ("date", "Date of birth: 19370412.", ["19370412"]),
    ("date", "Date: 2021/03/03", ["2021/03/03"]),
    ("date", "Previous CT 14 Feb 2020 showed no nodule.", ["14 Feb 2020"]),
    ("date", "Study date 7th Jan 2022.", ["7th Jan 2022"]),
    ("date", "Compared to 1st of Dec, 2019.", ["1st of Dec, 2019"]),
    ("date", "Scanned 30-NOV-2018.", ["30-NOV-2018"]),
    ("date", "Scanned Nov 30 2018.", ["Nov 30 2018"]),
    ("date", "Date 31.12.20 noted.", ["31.12.20"]),
    # names of relatives, clinicians and the patient
    ("name", "Daughter Mary Hollingsworth was informed.", ["Hollingsworth"]),
    ("name", "Her husband, Tobias Ferreira, asked for a copy.", ["Ferreira", "Tobias"]),
    ("name", "Son (Rajesh) accompanied the patient.", ["Rajesh"]),
    ("name", "Next of kin Agnieszka Nowakowska.", ["Nowakowska", "Agnieszka"]),
    ("name", "Wife Ingrid waited outside.", ["Ingrid"]),
    ("name", "Results discussed with Dr Okonjo.", ["Okonjo"]),
    ("name", "Reported by Dr. Helena Vasquez-Ortiz.", ["Vasquez-Ortiz", "Helena"]),
    ("name", "Mr Abernathy consented.", ["Abernathy"]),
    ("name", "Mrs. O'Halloran declined contrast.", ["O'Halloran"]),
    ("name", "Ms Thistlewood was scanned prone.", ["Thistlewood"]),
    ("name", "Prof. Lindqvist reviewed the images.", ["Lindqvist"]),
    ("name", "Patient name: Ebenezer Quartermaine.", ["Quartermaine", "Ebenezer"]),
    ("name", "Brother Kwame also has sarcoidosis.", ["Kwame"]),
    ("name", "Mother, Brigitte Lemaire, present.", ["Lemaire", "Brigitte"]),
    ("name", "Verified by Dr A. Castellanos.", ["Castellanos"]),
    ("name", "Carer Siobhan helped with positioning.", ["Siobhan"]),
    ("name", "Dictated by Dr Nakamura-Lee.", ["Nakamura-Lee"]),
    ("name", "Referred by Dr. Ferdinand Okafor.", ["Okafor", "Ferdinand"]),
    ("name", "Partner Jamal Whitaker was phoned.", ["Whitaker", "Jamal"]),
    ("name", "Sister: Dolores.", ["Dolores"]),
    ("name", "Guardian Priyanka Raman signed.", ["Raman", "Priyanka"]),
    ("name", "Granddaughter Chloe translated.", ["Chloe"]),
    ("name", "Signed by Dr Emeka Nwosu, consultant.", ["Nwosu", "Emeka"]),
    ("name", "Informed Mr Fitzgerald-Boyle by phone.", ["Fitzgerald-Boyle"]),
    # addresses and postcodes
    ("address", "Lives at 12 Baker Street, London NW1 6XE.", ["12 Baker Street", "NW1 6XE"]),
    ("address", "Address: 221B Larkspur Road, Leeds LS6 2QT.", ["Larkspur Road", "LS6 2QT"]),
    ("address", "Home 45 Cedar Avenue, Springfield, IL 62704.", ["Cedar Avenue", "62704"]),
    ("address", "From 7 Mill Lane, Bath BA1 1AA.", ["Mill Lane", "BA1 1AA"]),
    ("address", "Moved to 1600 Pennsylvania Avenue.", ["Pennsylvania Avenue"]),
    ("address", "Postcode M13 9PL.", ["M13 9PL"]),
    ("address", "Postcode EC1A 1BB on the form.", ["EC1A 1BB"]),
    ("address", "Nursing home at 3 Rosewood Close, Derby DE22 3NE.", ["Rosewood Close", "DE22 3NE"]),
    ("address", "Lives at 88 Queen's Drive.", ["Queen's Drive", "88 Queen"]),
    ("address", "Zip 10027, NY 10027.", ["10027"]),
    ("address", "Transferred from 9 Harbour Way, Cork.", ["Harbour Way"]),
    ("address", "Flat 4, 19 Wellington Terrace, Bristol BS8 4LR.", ["Wellington Terrace", "BS8 4LR"]),
    # combinations, as reports write them
    ("mixed", "Patient Mrs. Eudora Blackwood (MRN 3317750, DOB 02/11/1949) from 5 Elm Grove, Hull HU5 2LP.",
     ["Blackwood", "Eudora", "3317750", "02/11/1949", "Elm Grove", "HU5 2LP"]),
    ("mixed", "Discussed with daughter Fenella on 07700 900462 on 5th of May 2022.",
     ["Fenella", "900462", "5th of May 2022"]),
    ("mixed", "Comparison: CT 12-Jan-2020 (acc 88120933) at St Bartholomew's.",
     ["12-Jan-2020", "88120933"]),
    ("mixed", "Addendum by Dr Yusuf Demir on 14/02/2022: tel 0161 496 0755.",
     ["Demir", "Yusuf", "14/02/2022", "496 0755"]),
    ("mixed", "NHS 943 476 5919 / SSN 078-05-1120 / MRN 551291.", ["9434765919", "078-05-1120", "551291"]),
    ("mixed", "Husband Lars Eriksen (tel +46 8 123 456 78) informed 2nd of June.",
     ["Eriksen", "Lars", "123 456 78", "2nd of June"]),
    ("mixed", "Seen by Mr. Adebayo at 40 Oak Road, Norwich NR2 3AB on 9 Oct 2021.",
     ["Adebayo", "Oak Road", "NR2 3AB", "9 Oct 2021"]),
    ("mixed", "Email results to w.kowalczyk@example.com and call 555-231-4485.",
     ["kowalczyk", "231-4485"]),
]  # fmt: skip

#: Clinical sentences that de-identification must leave exactly as they are.
CLINICAL: list[str] = [
    "A 5 mm nodule in segment 6 of the right lower lobe.",
    "Compression fracture of T12 and mild wedging of L1; C7 is intact.",
    "Ground-glass opacity measuring 12 x 9 mm (previously 10.5 x 8 mm).",
    "Ascending aorta 38 mm, descending aorta 27 mm.",
    "Agatston score 412; LAD and RCA calcification.",
    "Consolidation in 2/3 of the left lower lobe.",
    "Lung-RADS 4A; follow-up in 3 months is recommended.",
    "Emphysema involving approximately 15% of the lung volume.",
    "Pleural effusion of 250 mL on the right.",
    "Heart size normal. No pericardial effusion.",
    "Bronchiectasis in the middle lobe and lingula.",
    "Mosaic attenuation pattern with air trapping on expiration.",
    "Fleischner Society 2017 guidelines apply.",
    "Density 35 HU before and 90 HU after contrast.",
    "Hiatal hernia. Calcified lymph node 8 mm in station 4R.",
]


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def leaked(out: str, secrets: list[str]) -> list[str]:
    """Secrets still in ``out``: as written (case-insensitive), or, for numbers, as the same digits."""
    return [
        s
        for s in secrets
        if s.lower() in out.lower() or (len(_digits(s)) >= 5 and _digits(s) in _digits(out))
    ]
