"""Synthetic hospital: phantom consistency, DICOM geometry, reports vs labels, determinism, batches."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from exact_ct.schema import ABNORMALITIES, DEFAULT_ORGAN_REGIONS, ORGAN_IDS, slug
from exact_ct.synth import render_study
from exact_ct.synth.drop import DropConfig, write_drop

SEED = 11
N_STUDIES = 3


@pytest.fixture(scope="module")
def studies():
    return [render_study(i, SEED) for i in range(6)]


@pytest.fixture(scope="module")
def drop_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_drop(out, DropConfig(studies=N_STUDIES, seed=SEED, batch="b1"), progress=False)
    return out


def _region(study, name: str) -> np.ndarray:
    return np.isin(study.organs, DEFAULT_ORGAN_REGIONS[name])


def test_organ_map_agrees_with_hu(studies):
    for s in studies:
        hu = s.hu.astype(float)
        for organ in ("lung_left", "lung_right"):
            m = s.organs == ORGAN_IDS[organ]
            assert m.sum() > 1000, organ
            assert np.median(hu[m]) < -650, f"{organ} is not mostly air"
        assert np.median(hu[s.organs == ORGAN_IDS["outside_body"]]) < -900
        assert 0 < np.median(hu[s.organs == ORGAN_IDS["heart"]]) < 260
        assert np.median(hu[s.organs == ORGAN_IDS["mediastinum"]]) < 0  # mediastinal fat
        # patient's left lung lies at lower RAS x than the right lung
        xs = np.arange(s.hu.shape[0])[:, None, None]
        left_x = np.broadcast_to(xs, s.hu.shape)[s.organs == ORGAN_IDS["lung_left"]].mean()
        right_x = np.broadcast_to(xs, s.hu.shape)[s.organs == ORGAN_IDS["lung_right"]].mean()
        assert left_x < right_x
        assert s.organs.max() <= 9


def test_lesions_confined_and_match_hu(studies):
    seen: set[str] = set()
    for s in studies:
        assert set(s.lesions) == {k for k, v in s.labels.items() if v}
        for name, mask in s.lesions.items():
            m = mask.astype(bool)
            assert m.any(), name
            assert not (m & ~_region(s, name)).any(), f"{name} leaves its organ region"
            hu = s.hu[m].astype(float)
            seen.add(name)
            if name in ("Pleural effusion", "Pericardial effusion"):
                assert -60 < np.median(hu) < 60, f"{name} is not fluid"
            if name in ("Arterial wall calcification", "Coronary artery wall calcification"):
                assert hu.max() > 150, f"{name} is not dense"
            if name == "Medical material":
                assert hu.max() > 2000
            if name == "Emphysema":
                assert np.median(hu) < -880
            if name == "Consolidation":
                assert np.median(hu) > -300
    assert len(seen) >= 6  # the fixture covers a variety of findings


def _read_series(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Reference reader: sort by position along the slice normal, rescale, canonicalise with nibabel."""
    dss = [pydicom.dcmread(f) for f in files]
    iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, dtype=float))))
    vol = np.stack(
        [d.pixel_array.astype(float) * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss],
        axis=-1,
    )
    vol = vol.transpose(1, 0, 2)  # (rows, cols, k) -> (cols, rows, k) = nibabel's DICOM convention
    p0 = np.array(dss[0].ImagePositionPatient, dtype=float)
    p1 = np.array(dss[1].ImagePositionPatient, dtype=float)
    ps = [float(v) for v in dss[0].PixelSpacing]
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * ps[1]
    lps[:3, 1] = iop[3:] * ps[0]
    lps[:3, 2] = p1 - p0
    lps[:3, 3] = p0
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    img = nib.as_closest_canonical(nib.Nifti1Image(vol.astype(np.float32), ras))
    return np.asarray(img.dataobj), img.affine


def test_dicom_reads_back_to_truth_grid(drop_dir):
    meta = pd.read_csv(drop_dir / "truth" / "studies.csv", dtype=str)
    files = [p for p in (drop_dir / "drop" / "dicom").rglob("*") if p.is_file()]
    by_series: dict[str, list[Path]] = {}
    headers = {}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        by_series.setdefault(ds.SeriesInstanceUID, []).append(f)
        headers[ds.SeriesInstanceUID] = ds
    for row in meta.itertuples():
        study = render_study(int(row.index), SEED, batch="b1")
        uid = row.diagnostic_series_uid
        ds = headers[uid]
        assert ds.Modality == "CT" and ds.BodyPartExamined == "CHEST"
        assert ds.AccessionNumber == row.accession_number and ds.PatientID == row.patient_id
        assert str(ds.PatientName) and ds.PatientBirthDate and ds.InstitutionName
        # file names do not follow slice order
        names = sorted(f.name for f in by_series[uid])
        by_pos = [
            f.name
            for f in sorted(
                by_series[uid],
                key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]),
            )
        ]
        assert names != by_pos
        vol, affine = _read_series(by_series[uid])
        organs = nib.load(drop_dir / "truth" / "organs" / f"{row.accession_number}.nii.gz")
        assert vol.shape == organs.shape == study.hu.shape
        np.testing.assert_allclose(affine, organs.affine, atol=1e-3)
        np.testing.assert_allclose(affine, study.affine, atol=1e-3)
        assert np.abs(vol - study.hu).max() <= 1
        np.testing.assert_array_equal(np.asarray(organs.dataobj), study.organs)
        for name in ABNORMALITIES:
            path = drop_dir / "truth" / "lesions" / row.accession_number / f"{slug(name)}.nii.gz"
            assert path.exists() == bool(study.labels[name])
        # other series of the same study: scout is a single LOCALIZER image
        for other_uid, fs in by_series.items():
            h = headers[other_uid]
            if h.StudyInstanceUID == ds.StudyInstanceUID and "LOCALIZER" in h.ImageType:
                assert len(fs) == 1


# Independent vocabulary: a mention of each abnormality in report text.
MENTION = {
    "Medical material": r"pacemaker|port|sternotomy|device|foreign material",
    "Arterial wall calcification": r"aort[^.]*calcif|calcif[^.]*aort|atheroscl[^.]*aort",
    "Cardiomegaly": r"cardiomegaly|heart size|heart is (not )?enlarged|heart contour and size",
    "Pericardial effusion": r"pericardial",
    "Coronary artery wall calcification": r"coronary",
    "Hiatal hernia": r"hiatal hernia",
    "Lymphadenopathy": r"lymph",
    "Emphysema": r"emphysem",
    "Atelectasis": r"atelecta",
    "Lung nodule": r"nodul",
    "Lung opacity": r"opacit|ground[- ]glass",
    "Pulmonary fibrotic sequela": r"fibrotic|scarring",
    "Pleural effusion": r"pleural (effusion|fluid)|pleural fluid|-sided pleural",
    "Mosaic attenuation pattern": r"mosaic",
    "Peribronchial thickening": r"peribronchial|bronchial wall thickening",
    "Consolidation": r"consolidation",
    "Bronchiectasis": r"bronchiecta",
    "Interlobular septal thickening": r"septal thickening|interlobular septa",
}


def test_reports_mention_exactly_the_reported_labels(drop_dir):
    truth = pd.read_csv(drop_dir / "truth" / "labels.csv", dtype={"accession_number": str})
    reported = pd.read_csv(drop_dir / "truth" / "reported_labels.csv", dtype={"accession_number": str})
    noise = pd.read_csv(drop_dir / "truth" / "label_noise.csv", dtype={"accession_number": str})
    reports = pd.read_csv(drop_dir / "drop" / "reports.csv", dtype={"accession_number": str})
    assert list(reports.columns) == ["accession_number", "patient_id", "findings", "impression"]
    assert len(truth) == len(reported) == len(reports) == N_STUDIES
    for t, r, rep in zip(
        truth.itertuples(index=False),
        reported.itertuples(index=False),
        reports.itertuples(index=False),
        strict=True,
    ):
        text = f"{rep.findings}\n{rep.impression}".lower()
        events = {
            (a, k)
            for a, k in noise[noise.accession_number == t.accession_number][
                ["abnormality", "kind"]
            ].itertuples(index=False)
        }
        for i, name in enumerate(ABNORMALITIES):
            true_v, rep_v = t[2 + i], r[2 + i]
            mentioned = re.search(MENTION[name], text) is not None
            if true_v == 1:
                if (name, "omitted") in events:
                    assert pd.isna(rep_v)
                elif (name, "hedged") in events:
                    assert rep_v == -1
                else:
                    assert rep_v == 1, name
            else:
                assert pd.isna(rep_v) or rep_v == 0, name
            assert mentioned == (not pd.isna(rep_v)), f"{name}: reported {rep_v} but mention={mentioned}"


def test_label_noise_omits_and_hedges(tmp_path):
    base = render_study(5, SEED, label_noise=0.0, hedge_share=0.0)
    assert all(base.reported_labels[k] == 1 for k, v in base.labels.items() if v)
    noisy = [render_study(i, SEED, label_noise=0.5, hedge_share=0.3) for i in (0, 3, 4)]
    kinds = {k for s in noisy for _, k in s.noise_events}
    assert kinds == {"omitted", "hedged"}
    for s in noisy:
        for name, kind in s.noise_events:
            assert s.reported_labels[name] == (None if kind == "omitted" else -1)
    with pytest.raises(ValueError):
        render_study(0, SEED, label_noise=1.5)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_and_batches_do_not_collide(tmp_path, drop_dir):
    again = tmp_path / "again"
    write_drop(again, DropConfig(studies=N_STUDIES, seed=SEED, batch="b1"), workers=2, progress=False)
    a, b = _hashes(drop_dir), _hashes(again)
    assert a == b and len(a) > 50
    assert (again / "drop" / "_COMPLETE").exists()
    other = tmp_path / "other"
    write_drop(other, DropConfig(studies=2, seed=SEED, batch="b2"), progress=False)
    acc1 = set(pd.read_csv(drop_dir / "truth" / "studies.csv", dtype=str).accession_number)
    s2 = pd.read_csv(other / "truth" / "studies.csv", dtype=str)
    assert not acc1 & set(s2.accession_number)
    uids1 = {
        pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
        for f in (drop_dir / "drop" / "dicom").rglob("*")
        if f.is_file()
    }
    uids2 = {
        pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
        for f in (other / "drop" / "dicom").rglob("*")
        if f.is_file()
    }
    assert not uids1 & uids2
    assert (other / "truth" / "meta.json").read_text().count('"batch": "b2"') == 1
    with pytest.raises(ValueError, match="not empty"):
        write_drop(other, DropConfig(studies=1, seed=SEED, batch="b2"), progress=False)
