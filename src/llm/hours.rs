//! Business hours: when the business is open, in its own time zone, for the `business_hours`
//! tool.
//!
//! Hours are written as `"<days> <ranges>"`: `"mon-fri 09:00-17:00"`, `"sat 10:00-14:00"`,
//! `"mon,wed 08:00-12:00,13:00-17:30"`, `"daily 07:00-22:00"`. A range whose end is not after
//! its start runs past midnight (`"fri 22:00-02:00"` is open until 2 AM on Saturday); `24:00`
//! ends a range at midnight. A range belongs to the day it starts on, and a closed date cancels
//! the ranges starting that day. Times are local wall-clock times: across a daylight-saving
//! change, "09:00" is nine on the clock, and an opening time skipped by the change opens at the
//! first valid time after it.

use std::collections::BTreeSet;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Business hours as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHoursConfig {
    /// IANA time zone ("Europe/London").
    pub timezone: String,
    /// Opening ranges, e.g. `"mon-fri 09:00-17:00"`.
    #[serde(default)]
    pub open: Vec<String>,
    /// Whole local days closed, `"2026-12-25"`.
    #[serde(default)]
    pub closed_dates: Vec<String>,
}

/// Why business hours do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    /// The time zone is not an IANA name.
    #[error(
        "business_hours.timezone: unknown time zone `{0}` (use an IANA name such as Europe/London)"
    )]
    Timezone(String),
    /// An opening entry is malformed.
    #[error("business_hours.open entry `{entry}`: {message}")]
    Entry {
        /// The entry as written.
        entry: String,
        /// What is wrong.
        message: String,
    },
    /// A closed date is malformed.
    #[error("business_hours.closed_dates entry `{entry}`: expected a date like 2026-12-25")]
    ClosedDate {
        /// The entry as written.
        entry: String,
    },
}

/// One opening range of a weekday, in minutes after that day's local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Span {
    /// Opening minute (0..1440).
    start: u32,
    /// Closing minute (start < end ≤ 2880; past 1440 is the next day).
    end: u32,
}

/// Parsed business hours.
#[derive(Debug, Clone)]
pub struct BusinessHours {
    tz: Tz,
    /// Ranges by weekday, Monday first, sorted.
    week: [Vec<Span>; 7],
    closed: BTreeSet<NaiveDate>,
}

/// Weekday names as written in descriptions, Monday first.
const DAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Month names, January first.
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

impl BusinessHours {
    /// Parses `config`; errors name the entry at fault.
    pub fn new(config: &BusinessHoursConfig) -> Result<BusinessHours, HoursError> {
        let tz: Tz = config
            .timezone
            .trim()
            .parse()
            .map_err(|_| HoursError::Timezone(config.timezone.clone()))?;
        let mut week: [Vec<Span>; 7] = Default::default();
        for entry in &config.open {
            let bad = |message: String| HoursError::Entry {
                entry: entry.clone(),
                message,
            };
            let (days, spans) = parse_entry(entry).map_err(bad)?;
            for day in days {
                week[day].extend(spans.iter().copied());
            }
        }
        for spans in &mut week {
            spans.sort_unstable();
            spans.dedup();
        }
        let mut closed = BTreeSet::new();
        for entry in &config.closed_dates {
            let date = NaiveDate::parse_from_str(entry.trim(), "%Y-%m-%d").map_err(|_| {
                HoursError::ClosedDate {
                    entry: entry.clone(),
                }
            })?;
            closed.insert(date);
        }
        Ok(BusinessHours { tz, week, closed })
    }

    /// The time zone's IANA name.
    pub fn timezone(&self) -> &str {
        self.tz.name()
    }

    /// Whether the business is open at `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let Some(local) = self.local(at) else {
            return false;
        };
        let date = local.date();
        [date.pred_opt(), Some(date)]
            .into_iter()
            .flatten()
            .any(|day| {
                self.spans_on(day).any(|span| {
                    span_bounds(day, span)
                        .is_some_and(|(open, close)| local >= open && local < close)
                })
            })
    }

    /// The next instant after `at` when the business opens (if closed) or closes (if open),
    /// looking up to a year ahead. Besides the wall-clock boundaries, a clock change can flip
    /// it: a clock set back reopens a range whose closing time it repeats ("00:00-01:30" is
    /// open again at the second 01:00).
    pub fn next_change(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let open_now = self.is_open(at);
        let boundary = self.next_boundary(at, open_now);
        let limit = boundary.or_else(|| at.checked_add_signed(Duration::days(366)))?;
        self.first_offset_flip(at, limit, open_now).or(boundary)
    }

    /// The next wall-clock opening or closing after `at` that flips `open_now`.
    fn next_boundary(&self, at: DateTime<Utc>, open_now: bool) -> Option<DateTime<Utc>> {
        let today = self.local(at)?.date();
        let mut first = today.pred_opt()?;
        for _ in 0..53 {
            let last = first.checked_add_signed(Duration::days(8))?;
            // Boundaries before `limit` cannot be preceded by one from a later day.
            let limit = last.and_time(NaiveTime::MIN);
            let mut bounds: Vec<NaiveDateTime> = Vec::new();
            let mut day = first;
            while day <= last {
                for (open, close) in self.spans_on(day).filter_map(|span| span_bounds(day, span)) {
                    bounds.extend([open, close]);
                }
                day = day.succ_opt()?;
            }
            bounds.sort_unstable();
            bounds.dedup();
            for bound in bounds.into_iter().filter(|b| *b < limit) {
                let instant = self.instant(bound);
                if instant > at && self.is_open(instant) != open_now {
                    return Some(instant);
                }
            }
            first = last.pred_opt()?;
        }
        None
    }

    /// The first clock change in `(after, before)` at which the open state differs from
    /// `open_now`.
    fn first_offset_flip(
        &self,
        after: DateTime<Utc>,
        before: DateTime<Utc>,
        open_now: bool,
    ) -> Option<DateTime<Utc>> {
        let step = Duration::hours(1);
        let mut from = after;
        while from < before {
            let to = from.checked_add_signed(step)?.min(before);
            if self.offset_secs(from) != self.offset_secs(to) {
                let change = self.offset_change(from, to);
                if change > after && change < before && self.is_open(change) != open_now {
                    return Some(change);
                }
            }
            from = to;
        }
        None
    }

    /// The first whole second in `(from, to]` with `to`'s offset (zones change offset on whole
    /// seconds); `from` and `to` must have different offsets.
    fn offset_change(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> DateTime<Utc> {
        let at = |secs: i64| DateTime::from_timestamp(secs, 0).unwrap_or(to);
        let target = self.offset_secs(to);
        let mut low = from.timestamp();
        let mut high = to.timestamp() + i64::from(to.timestamp_subsec_nanos() > 0);
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if self.offset_secs(at(mid)) == target {
                high = mid;
            } else {
                low = mid;
            }
        }
        at(high)
    }

    /// The zone's UTC offset at `at`, in seconds.
    fn offset_secs(&self, at: DateTime<Utc>) -> i32 {
        self.tz
            .offset_from_utc_datetime(&at.naive_utc())
            .fix()
            .local_minus_utc()
    }

    /// The weekly hours in words: "Monday to Friday 9 AM to 5 PM, Saturday 10 AM to 2 PM
    /// (Europe/London)".
    pub fn describe(&self) -> String {
        let mut groups: Vec<(usize, usize)> = Vec::new();
        for day in 0..7 {
            if self.week[day].is_empty() {
                continue;
            }
            match groups.last_mut() {
                Some((_, end)) if *end + 1 == day && self.week[*end] == self.week[day] => {
                    *end = day;
                }
                _ => groups.push((day, day)),
            }
        }
        if groups.is_empty() {
            return format!("closed every day ({})", self.tz.name());
        }
        let parts: Vec<String> = groups
            .iter()
            .map(|&(from, to)| {
                let days = match to - from {
                    0 => DAY_NAMES[from].to_string(),
                    1 => format!("{} and {}", DAY_NAMES[from], DAY_NAMES[to]),
                    _ => format!("{} to {}", DAY_NAMES[from], DAY_NAMES[to]),
                };
                format!("{days} {}", describe_spans(&self.week[from]))
            })
            .collect();
        format!("{} ({})", parts.join(", "), self.tz.name())
    }

    /// Today's hours in words ("9 AM to 5 PM", "closed today").
    pub fn today(&self, at: DateTime<Utc>) -> String {
        let spans: Vec<Span> = match self.local(at) {
            Some(local) => self.spans_on(local.date()).copied().collect(),
            None => Vec::new(),
        };
        if spans.is_empty() {
            "closed today".to_string()
        } else {
            describe_spans(&spans)
        }
    }

    /// What the `business_hours` tool answers: `open_now`, `today`, `hours`, `timezone`,
    /// `local_time`, and `closes_at` (when open) or `next_open` (when closed).
    pub fn status(&self, at: DateTime<Utc>) -> serde_json::Value {
        let open = self.is_open(at);
        let local = self.local(at).unwrap_or_else(|| at.naive_utc());
        let mut value = serde_json::json!({
            "open_now": open,
            "today": self.today(at),
            "hours": self.describe(),
            "timezone": self.tz.name(),
            "local_time": format!("{} {}", DAY_NAMES[weekday_index(local.weekday())], clock(minute_of_day(local))),
        });
        if let Some(change) = self.next_change(at) {
            let then = self.local(change).unwrap_or_else(|| change.naive_utc());
            let when = spoken_when(local, then);
            let key = if open { "closes_at" } else { "next_open" };
            value[key] = serde_json::Value::String(when);
        }
        value
    }

    /// The local wall-clock time of `at` (`None` past the end of the calendar).
    fn local(&self, at: DateTime<Utc>) -> Option<NaiveDateTime> {
        let utc = at.naive_utc();
        utc.checked_add_offset(self.tz.offset_from_utc_datetime(&utc).fix())
    }

    /// The ranges starting on local `day`, none if it is a closed date.
    fn spans_on(&self, day: NaiveDate) -> impl Iterator<Item = &Span> {
        let closed = self.closed.contains(&day);
        self.week[weekday_index(day.weekday())]
            .iter()
            .filter(move |_| !closed)
    }

    /// The instant of local wall-clock time `local`: the earlier of two in a repeated hour, the
    /// first valid time after a skipped one.
    fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let mut probe = local;
        for _ in 0..=4 * 60 {
            match self.tz.from_local_datetime(&probe) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    return t.with_timezone(&Utc);
                }
                LocalResult::None => match probe.checked_add_signed(Duration::minutes(1)) {
                    Some(next) => probe = next,
                    None => break,
                },
            }
        }
        // No zone skips more than four hours; fall back to reading the time as UTC.
        Utc.from_utc_datetime(&local)
    }
}

/// Minutes after midnight of a local time.
fn minute_of_day(t: NaiveDateTime) -> u32 {
    use chrono::Timelike;
    t.hour() * 60 + t.minute()
}

/// Monday = 0 … Sunday = 6.
fn weekday_index(day: Weekday) -> usize {
    day.num_days_from_monday() as usize
}

/// Local opening and closing wall-clock times of `span` on `day`.
/// `None` at the very end of the calendar.
fn span_bounds(day: NaiveDate, span: &Span) -> Option<(NaiveDateTime, NaiveDateTime)> {
    let midnight = day.and_time(NaiveTime::MIN);
    Some((
        midnight.checked_add_signed(Duration::minutes(i64::from(span.start)))?,
        midnight.checked_add_signed(Duration::minutes(i64::from(span.end)))?,
    ))
}

/// "9 AM to 5 PM and 6 PM to 8 PM".
fn describe_spans(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| {
            if (s.start, s.end) == (0, 1440) {
                "all day".to_string()
            } else {
                format!("{} to {}", clock(s.start), clock(s.end))
            }
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// A minute of the day as spoken: "9 AM", "5:30 PM", "noon", "midnight".
fn clock(minutes: u32) -> String {
    let m = minutes % 1440;
    let (hour, minute) = (m / 60, m % 60);
    match (hour, minute) {
        (0, 0) => "midnight".to_string(),
        (12, 0) => "noon".to_string(),
        _ => {
            let suffix = if hour < 12 { "AM" } else { "PM" };
            let h12 = match hour % 12 {
                0 => 12,
                h => h,
            };
            if minute == 0 {
                format!("{h12} {suffix}")
            } else {
                format!("{h12}:{minute:02} {suffix}")
            }
        }
    }
}

/// When `then` is, said from `now` (both local): "today at 5 PM", "tomorrow at 9 AM",
/// "Monday 5 January at 9 AM".
fn spoken_when(now: NaiveDateTime, then: NaiveDateTime) -> String {
    let time = clock(minute_of_day(then));
    let (today, day) = (now.date(), then.date());
    if day == today {
        format!("today at {time}")
    } else if today.succ_opt() == Some(day) {
        format!("tomorrow at {time}")
    } else {
        format!(
            "{} {} {} at {time}",
            DAY_NAMES[weekday_index(day.weekday())],
            day.day(),
            MONTH_NAMES[day.month0() as usize]
        )
    }
}

/// Parses `"<days> <ranges>"` into weekday indexes and ranges.
fn parse_entry(entry: &str) -> Result<(Vec<usize>, Vec<Span>), String> {
    let entry = entry.trim();
    let Some((days, ranges)) = entry.split_once(char::is_whitespace) else {
        return Err("expected `<days> <HH:MM-HH:MM>`, e.g. `mon-fri 09:00-17:00`".to_string());
    };
    let days = parse_days(days)?;
    let ranges: String = ranges.chars().filter(|c| !c.is_whitespace()).collect();
    let spans = ranges
        .split(',')
        .map(parse_range)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((days, spans))
}

/// `mon-fri`, `sat,sun`, `fri-mon`, `daily`.
fn parse_days(text: &str) -> Result<Vec<usize>, String> {
    let lower = text.to_ascii_lowercase();
    if matches!(lower.as_str(), "daily" | "everyday") {
        return Ok((0..7).collect());
    }
    let mut days = Vec::new();
    for item in lower.split(',').filter(|s| !s.is_empty()) {
        match item.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (parse_day(from)?, parse_day(to)?);
                let mut day = from;
                loop {
                    days.push(day);
                    if day == to {
                        break;
                    }
                    day = (day + 1) % 7;
                }
            }
            None => days.push(parse_day(item)?),
        }
    }
    if days.is_empty() {
        return Err("no days given".to_string());
    }
    days.sort_unstable();
    days.dedup();
    Ok(days)
}

/// A weekday name or abbreviation.
fn parse_day(text: &str) -> Result<usize, String> {
    let day = match text {
        "mon" | "monday" => 0,
        "tue" | "tues" | "tuesday" => 1,
        "wed" | "wednesday" => 2,
        "thu" | "thur" | "thurs" | "thursday" => 3,
        "fri" | "friday" => 4,
        "sat" | "saturday" => 5,
        "sun" | "sunday" => 6,
        _ => {
            return Err(format!(
                "unknown day `{text}` (use mon, tue, wed, thu, fri, sat, sun)"
            ));
        }
    };
    Ok(day)
}

/// `09:00-17:00`; an end not after the start runs past midnight.
fn parse_range(text: &str) -> Result<Span, String> {
    let Some((from, to)) = text.split_once('-') else {
        return Err(format!(
            "expected a time range like 09:00-17:00, got `{text}`"
        ));
    };
    let start = parse_time(from)?;
    let end = parse_time(to)?;
    if start == 1440 {
        return Err(format!("range `{text}` cannot start at 24:00"));
    }
    if start == end {
        return Err(format!("range `{text}` is empty"));
    }
    let end = if end < start { end + 1440 } else { end };
    Ok(Span { start, end })
}

/// `HH:MM` (or `H:MM`), 00:00 to 24:00, as minutes.
fn parse_time(text: &str) -> Result<u32, String> {
    let bad = || format!("bad time `{text}` (expected HH:MM, 00:00 to 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let hour: u32 = h.parse().map_err(|_| bad())?;
    let minute: u32 = m.parse().map_err(|_| bad())?;
    if minute > 59 || hour > 24 || (hour == 24 && minute != 0) {
        return Err(bad());
    }
    Ok(hour * 60 + minute)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(tz: &str, open: &[&str], closed: &[&str]) -> BusinessHours {
        BusinessHours::new(&BusinessHoursConfig {
            timezone: tz.into(),
            open: open.iter().map(|s| s.to_string()).collect(),
            closed_dates: closed.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn london() -> BusinessHours {
        hours(
            "Europe/London",
            &["mon-fri 09:00-17:00", "sat 10:00-14:00"],
            &["2026-12-25"],
        )
    }

    #[test]
    fn describes_the_week() {
        assert_eq!(
            london().describe(),
            "Monday to Friday 9 AM to 5 PM, Saturday 10 AM to 2 PM (Europe/London)"
        );
        let h = hours(
            "Asia/Kolkata",
            &["sat,sun 10:00-12:00,13:30-18:00", "wed 00:00-24:00"],
            &[],
        );
        assert_eq!(
            h.describe(),
            "Wednesday all day, Saturday and Sunday 10 AM to noon and 1:30 PM to 6 PM (Asia/Kolkata)"
        );
        assert_eq!(hours("UTC", &[], &[]).describe(), "closed every day (UTC)");
    }

    #[test]
    fn open_in_winter_and_summer_time() {
        let h = london();
        // Monday 5 January 2026, GMT.
        assert!(h.is_open(utc("2026-01-05T09:30:00Z")));
        assert!(!h.is_open(utc("2026-01-05T08:59:00Z")));
        assert!(!h.is_open(utc("2026-01-05T17:00:00Z")));
        // Monday 6 July 2026, BST (UTC+1): 08:30Z is 09:30 local, 16:30Z is 17:30 local.
        assert!(h.is_open(utc("2026-07-06T08:30:00Z")));
        assert!(!h.is_open(utc("2026-07-06T16:30:00Z")));
        assert!(!h.is_open(utc("2026-07-05T12:00:00Z")), "Sunday");
    }

    #[test]
    fn next_change_across_the_clock_change() {
        let h = london();
        // Friday 27 March 2026 18:00 GMT; clocks go forward on Sunday 29 March; Monday opens at
        // 09:00 BST = 08:00Z.
        assert_eq!(
            h.next_change(utc("2026-03-27T18:00:00Z")),
            Some(utc("2026-03-28T10:00:00Z")),
            "Saturday 10 AM GMT"
        );
        assert_eq!(
            h.next_change(utc("2026-03-28T15:00:00Z")),
            Some(utc("2026-03-30T08:00:00Z"))
        );
        assert_eq!(
            h.next_change(utc("2026-03-30T08:00:00Z")),
            Some(utc("2026-03-30T16:00:00Z")),
            "open now: closes at 17:00 BST"
        );
    }

    #[test]
    fn overnight_range() {
        let h = hours("Europe/Berlin", &["fri 22:00-02:00"], &[]);
        // Friday 6 March 2026; Berlin is UTC+1 in March before the change.
        assert!(!h.is_open(utc("2026-03-06T20:59:00Z")));
        assert!(h.is_open(utc("2026-03-06T21:00:00Z")));
        assert!(h.is_open(utc("2026-03-07T00:59:00Z")), "Saturday 01:59");
        assert!(!h.is_open(utc("2026-03-07T01:00:00Z")), "Saturday 02:00");
        assert_eq!(
            h.next_change(utc("2026-03-06T22:00:00Z")),
            Some(utc("2026-03-07T01:00:00Z"))
        );
        assert_eq!(h.describe(), "Friday 10 PM to 2 AM (Europe/Berlin)");
    }

    #[test]
    fn opening_skipped_by_spring_forward() {
        // New York, Sunday 8 March 2026: 02:00 EST jumps to 03:00 EDT.
        let h = hours("America/New_York", &["sun 02:00-05:00"], &[]);
        assert!(!h.is_open(utc("2026-03-08T06:59:00Z")), "01:59 EST");
        assert!(h.is_open(utc("2026-03-08T07:00:00Z")), "03:00 EDT");
        assert_eq!(
            h.next_change(utc("2026-03-08T05:00:00Z")),
            Some(utc("2026-03-08T07:00:00Z"))
        );
        assert_eq!(
            h.next_change(utc("2026-03-08T07:30:00Z")),
            Some(utc("2026-03-08T09:00:00Z")),
            "closes 05:00 EDT"
        );
    }

    #[test]
    fn repeated_hour_in_autumn() {
        // London, Sunday 25 October 2026: 02:00 BST goes back to 01:00 GMT.
        let h = hours("Europe/London", &["sun 01:30-03:00"], &[]);
        assert!(h.is_open(utc("2026-10-25T00:30:00Z")), "01:30 BST");
        assert!(h.is_open(utc("2026-10-25T01:45:00Z")), "01:45 GMT");
        assert!(!h.is_open(utc("2026-10-25T03:00:00Z")), "03:00 GMT");
        assert_eq!(
            h.next_change(utc("2026-10-25T00:00:00Z")),
            Some(utc("2026-10-25T00:30:00Z")),
            "the first 01:30"
        );
    }

    #[test]
    fn closed_dates() {
        let h = london();
        // Friday 25 December 2026.
        assert!(!h.is_open(utc("2026-12-25T10:00:00Z")));
        assert!(h.is_open(utc("2026-12-24T10:00:00Z")));
        assert_eq!(
            h.next_change(utc("2026-12-25T10:00:00Z")),
            Some(utc("2026-12-26T10:00:00Z"))
        );
        assert_eq!(h.today(utc("2026-12-25T10:00:00Z")), "closed today");
    }

    #[test]
    fn always_open_has_no_change() {
        let h = hours("UTC", &["daily 00:00-24:00"], &[]);
        assert!(h.is_open(utc("2026-05-05T00:00:00Z")));
        assert_eq!(h.next_change(utc("2026-05-05T00:00:00Z")), None);
        let never = hours("UTC", &[], &[]);
        assert_eq!(never.next_change(utc("2026-05-05T00:00:00Z")), None);
    }

    #[test]
    fn status_for_the_tool() {
        let h = london();
        let open = h.status(utc("2026-01-05T10:00:00Z"));
        assert_eq!(open["open_now"], true);
        assert_eq!(open["today"], "9 AM to 5 PM");
        assert_eq!(open["closes_at"], "today at 5 PM");
        assert_eq!(open["timezone"], "Europe/London");
        assert_eq!(open["local_time"], "Monday 10 AM");
        assert!(open.get("next_open").is_none());
        let closed = h.status(utc("2026-01-09T18:00:00Z"));
        assert_eq!(closed["open_now"], false);
        assert_eq!(closed["next_open"], "tomorrow at 10 AM");
        let sunday = h.status(utc("2026-01-10T15:00:00Z"));
        assert_eq!(sunday["next_open"], "Monday 12 January at 9 AM");
    }

    #[test]
    fn parse_errors_name_the_entry() {
        let cfg = |open: &[&str], closed: &[&str], tz: &str| BusinessHoursConfig {
            timezone: tz.into(),
            open: open.iter().map(|s| s.to_string()).collect(),
            closed_dates: closed.iter().map(|s| s.to_string()).collect(),
        };
        let err = |c: BusinessHoursConfig| BusinessHours::new(&c).unwrap_err().to_string();
        assert!(err(cfg(&[], &[], "Mars/Olympus")).contains("Mars/Olympus"));
        let e = err(cfg(
            &["mon-fri 09:00-17:00", "funday 10:00-12:00"],
            &[],
            "UTC",
        ));
        assert!(
            e.contains("`funday 10:00-12:00`") && e.contains("unknown day"),
            "{e}"
        );
        let e = err(cfg(&["mon 9-17"], &[], "UTC"));
        assert!(e.contains("`mon 9-17`") && e.contains("bad time"), "{e}");
        let e = err(cfg(&["mon 09:00-09:00"], &[], "UTC"));
        assert!(e.contains("empty"), "{e}");
        let e = err(cfg(&["mon"], &[], "UTC"));
        assert!(e.contains("expected"), "{e}");
        let e = err(cfg(&["mon 25:00-26:00"], &[], "UTC"));
        assert!(e.contains("bad time"), "{e}");
        let e = err(cfg(&[], &["25/12/2026"], "UTC"));
        assert!(e.contains("25/12/2026"), "{e}");
    }

    #[test]
    fn calendar_extremes_do_not_panic() {
        let h = hours("Pacific/Kiritimati", &["daily 22:00-02:00"], &[]);
        for at in [DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC] {
            let _ = h.is_open(at);
            let _ = h.next_change(at);
            let _ = h.status(at);
        }
    }

    #[test]
    fn day_ranges_wrap_the_week() {
        let h = hours("UTC", &["fri-mon 10:00-11:00"], &[]);
        assert_eq!(
            h.describe(),
            "Monday 10 AM to 11 AM, Friday to Sunday 10 AM to 11 AM (UTC)"
        );
    }
}
