"""Tabular sample sets (context for the case studies; appkit's models read text, images and speech)."""
from __future__ import annotations

import pandas as pd

from ._sources import package_dir


def smarket() -> pd.DataFrame:
    """ISLP ``Smarket``: 1,250 S&P 500 trading days 2001-2005, returns of the 5 previous days, Up / Down.

    Columns: Year, Lag1..Lag5, Volume, Today, Direction. From ``ISLP==0.6.0`` (BSD), read by path.
    """
    return pd.read_csv(package_dir("ISLP", "ISLP==0.6.0") / "data" / "Smarket.csv")


def cdnow() -> pd.DataFrame:
    """69,659 real CD purchases by 23,570 CDNOW customers, Jan 1997 - Jun 1998 (``Lifetimes==0.11.3``, MIT).

    Columns: ``customer_id``, ``date`` (datetime), ``cds``, ``dollars``.
    """
    path = package_dir("lifetimes", "Lifetimes==0.11.3") / "datasets" / "CDNOW_master.txt"
    df = pd.read_csv(path, sep=r"\s+", skiprows=1, names=["customer_id", "date", "cds", "dollars"],
                     dtype={"customer_id": str, "date": str})
    df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
    return df


def breast_cancer() -> pd.DataFrame:
    """scikit-learn's ``load_breast_cancer``: 569 tumours, 30 measurements, malignant / benign (UCI, CC BY 4.0)."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer(as_frame=True)
    df = d.frame.drop(columns="target")
    df["label"] = [d.target_names[t] for t in d.target]
    return df
