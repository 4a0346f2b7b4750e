"""Spark jobs of the platform: thin ``*_job.py`` entry modules and pure transform modules."""
