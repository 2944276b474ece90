"""What runs leave behind: records.py (the JSON of a run and a bench), report.py (the `fastmnist report`
command and the bench table), output.py (atomic writes), provenance.py and machine.py (what ran, where)."""
