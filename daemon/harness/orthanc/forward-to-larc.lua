-- Orthanc (1.10+) Lua script: when a study has been quiet for StableAge seconds, send its MR
-- series and any RTSTRUCT / SEG to larc in one store job (one association). A study that becomes
-- stable again (a mask drawn later) is sent again: larc treats identical instances as no-ops.
-- What larc itself sends back (SR, secondary captures: Modality SR / OT) is never forwarded.
-- The modality name "larc" must be declared in DicomModalities.

local FORWARDED = { MR = true, RTSTRUCT = true, SEG = true }

function OnStableStudy(studyId, tags, metadata)
  local study = ParseJson(RestApiGet('/studies/' .. studyId))
  local series = {}
  for _, seriesId in ipairs(study['Series']) do
    local info = ParseJson(RestApiGet('/series/' .. seriesId))
    if FORWARDED[info['MainDicomTags']['Modality']] then
      table.insert(series, seriesId)
    end
  end
  if #series > 0 then
    local job = ParseJson(RestApiPost('/modalities/larc/store',
      DumpJson({ Resources = series, Synchronous = false, Priority = 0 })))
    print('larc: forwarding ' .. #series .. ' series of study ' .. studyId .. ' (job ' .. job['ID'] .. ')')
  end
end
