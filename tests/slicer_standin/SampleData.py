"""Stand-in for Slicer's ``SampleData`` module (tests only): records custom sample registrations."""

from __future__ import annotations

import slicer


class SampleDataLogic:
    registered: list = []

    @staticmethod
    def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None, nodeNames=None,
                                       customDownloader=None, thumbnailFileName=None, loadFileTypes=None,
                                       loadFiles=None, loadFileProperties=None, checksums=None, loadFileType=None):
        """Signature of Slicer 5.8.1's Modules/Scripted/SampleData/SampleData.py."""
        entry = dict(category=category, sampleName=sampleName, uris=uris, fileNames=fileNames, nodeNames=nodeNames,
                     thumbnailFileName=thumbnailFileName, loadFileType=loadFileType, checksums=checksums)
        slicer._record("registerCustomSampleDataSource", sampleName)
        SampleDataLogic.registered.append(entry)
