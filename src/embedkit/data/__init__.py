"""Data sources: the NIH 6x200 builder, the phantom generator and the patient-disjoint split."""
