"""Stand-in for Slicer's ``ctk`` module (HippoSNN.py does not call it directly). Not CTK."""
