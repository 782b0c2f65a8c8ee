//! A contact's calling window: the local hours in which the dialer may ring them.
//!
//! A window is weekly ranges in the contact's IANA time zone plus closed dates, written exactly
//! like the business hours of [`crate::llm::hours`] (`"mon-fri 09:00-18:00"`,
//! `"sat 10:00-14:00"`, closed `"2026-12-25"`), whose parser and clock arithmetic it reuses.
//! Times are wall-clock times: on a daylight-saving change "09:00" is nine on the clock; an
//! opening inside the skipped hour starts at the first valid instant after it; an opening in
//! the repeated hour starts at its first occurrence.

use chrono::{DateTime, Utc};

use crate::llm::hours::{BusinessHours, BusinessHoursConfig, HoursError};

/// A contact's calling window as it arrives in a campaign's JSON; same shape as business hours.
pub type CallingWindowConfig = BusinessHoursConfig;

/// Why a calling window does not parse; errors name the field and entry at fault.
pub type CallingWindowError = HoursError;

/// A parsed calling window.
#[derive(Debug, Clone)]
pub struct CallingWindow {
    hours: BusinessHours,
}

impl CallingWindow {
    /// Parses `config`.
    pub fn new(config: &CallingWindowConfig) -> Result<CallingWindow, CallingWindowError> {
        Ok(CallingWindow {
            hours: BusinessHours::new(config)?,
        })
    }

    /// A window open at every instant (UTC, all day, every day).
    pub fn always() -> Result<CallingWindow, CallingWindowError> {
        CallingWindow::new(&CallingWindowConfig {
            timezone: "UTC".to_string(),
            open: vec!["daily 00:00-24:00".to_string()],
            closed_dates: Vec::new(),
        })
    }

    /// The window's IANA time zone name.
    pub fn timezone(&self) -> &str {
        self.hours.timezone()
    }

    /// Whether a call may start at `at`.
    pub fn is_allowed(&self, at: DateTime<Utc>) -> bool {
        self.hours.is_open(at)
    }

    /// `at` itself when inside the window, else the start of the next window (a clock set
    /// back can reopen one, see [`BusinessHours::next_change`]); `None` when the window does
    /// not open within about a year.
    pub fn next_allowed(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.hours.is_open(at) {
            return Some(at);
        }
        self.hours.next_change(at)
    }

    /// When the window that contains `at` closes (`None` if `at` is outside the window or it
    /// never closes within about a year).
    pub fn closes_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.hours.is_open(at) {
            return None;
        }
        self.hours.next_change(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;

    fn window(tz: &str, open: &[&str], closed: &[&str]) -> CallingWindow {
        CallingWindow::new(&CallingWindowConfig {
            timezone: tz.into(),
            open: open.iter().map(|s| s.to_string()).collect(),
            closed_dates: closed.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn office(tz: &str) -> CallingWindow {
        window(tz, &["mon-fri 09:00-18:00", "sat 10:00-14:00"], &[])
    }

    #[test]
    fn inside_the_window_is_now() {
        let w = office("UTC");
        // Monday 5 January 2026.
        let at = utc("2026-01-05T09:00:00Z");
        assert_eq!(w.next_allowed(at), Some(at));
        let at = utc("2026-01-05T17:59:59Z");
        assert_eq!(w.next_allowed(at), Some(at));
        assert_eq!(
            w.next_allowed(utc("2026-01-05T18:00:00Z")),
            Some(utc("2026-01-06T09:00:00Z")),
            "the end is exclusive"
        );
        assert_eq!(
            w.next_allowed(utc("2026-01-05T08:59:59Z")),
            Some(utc("2026-01-05T09:00:00Z"))
        );
    }

    #[test]
    fn weekend_moves_to_saturday_then_monday() {
        let w = office("UTC");
        // Friday 9 January 2026 19:00 → Saturday 10:00.
        assert_eq!(
            w.next_allowed(utc("2026-01-09T19:00:00Z")),
            Some(utc("2026-01-10T10:00:00Z"))
        );
        // Saturday 14:00 → Monday 09:00.
        assert_eq!(
            w.next_allowed(utc("2026-01-10T14:00:00Z")),
            Some(utc("2026-01-12T09:00:00Z"))
        );
    }

    #[test]
    fn kolkata_half_hour_offset() {
        let w = office("Asia/Kolkata");
        // Monday 5 January 2026 09:00 IST = 03:30Z.
        assert_eq!(
            w.next_allowed(utc("2026-01-05T00:00:00Z")),
            Some(utc("2026-01-05T03:30:00Z"))
        );
        assert!(w.is_allowed(utc("2026-01-05T12:29:00Z")), "17:59 IST");
        assert!(!w.is_allowed(utc("2026-01-05T12:30:00Z")), "18:00 IST");
        // Sunday in Kolkata while it is still Saturday in UTC: 2026-01-10T19:00Z = Sun 00:30.
        assert_eq!(
            w.next_allowed(utc("2026-01-10T19:00:00Z")),
            Some(utc("2026-01-12T03:30:00Z"))
        );
    }

    #[test]
    fn auckland_is_a_day_ahead() {
        let w = office("Pacific/Auckland");
        // January is NZDT (UTC+13). Sunday 4 January 2026 20:00Z = Monday 5 January 09:00.
        assert_eq!(
            w.next_allowed(utc("2026-01-04T12:00:00Z")),
            Some(utc("2026-01-04T20:00:00Z"))
        );
        // July is NZST (UTC+12). Monday 6 July 2026 09:00 = Sunday 5 July 21:00Z.
        assert_eq!(
            w.next_allowed(utc("2026-07-05T12:00:00Z")),
            Some(utc("2026-07-05T21:00:00Z"))
        );
    }

    #[test]
    fn auckland_dst_ends_in_april() {
        // Sunday 5 April 2026 03:00 NZDT goes back to 02:00 NZST. Window at 09:00 daily.
        let w = window("Pacific/Auckland", &["daily 09:00-10:00"], &[]);
        // Saturday 4 April 09:00 NZDT = 20:00Z on the 3rd.
        assert_eq!(
            w.next_allowed(utc("2026-04-03T12:00:00Z")),
            Some(utc("2026-04-03T20:00:00Z"))
        );
        // Sunday 5 April 09:00 NZST = 21:00Z on the 4th.
        assert_eq!(
            w.next_allowed(utc("2026-04-04T12:00:00Z")),
            Some(utc("2026-04-04T21:00:00Z"))
        );
    }

    #[test]
    fn new_york_spring_forward_nine_am() {
        // Sunday 8 March 2026: 02:00 EST → 03:00 EDT.
        let w = window("America/New_York", &["daily 09:00-18:00"], &[]);
        // Saturday 09:00 EST = 14:00Z.
        assert_eq!(
            w.next_allowed(utc("2026-03-07T05:00:00Z")),
            Some(utc("2026-03-07T14:00:00Z"))
        );
        // Sunday 09:00 EDT = 13:00Z.
        assert_eq!(
            w.next_allowed(utc("2026-03-07T23:30:00Z")),
            Some(utc("2026-03-08T13:00:00Z"))
        );
        assert!(!w.is_allowed(utc("2026-03-08T12:59:59Z")));
        assert!(w.is_allowed(utc("2026-03-08T13:00:00Z")));
    }

    #[test]
    fn new_york_fall_back_nine_am() {
        // Sunday 1 November 2026: 02:00 EDT → 01:00 EST.
        let w = window("America/New_York", &["daily 09:00-18:00"], &[]);
        // Saturday 09:00 EDT = 13:00Z; Sunday 09:00 EST = 14:00Z.
        assert_eq!(
            w.next_allowed(utc("2026-10-31T05:00:00Z")),
            Some(utc("2026-10-31T13:00:00Z"))
        );
        assert_eq!(
            w.next_allowed(utc("2026-10-31T23:00:00Z")),
            Some(utc("2026-11-01T14:00:00Z"))
        );
        assert!(!w.is_allowed(utc("2026-11-01T13:30:00Z")), "08:30 EST");
    }

    #[test]
    fn london_spring_forward_and_fall_back_nine_am() {
        let w = window("Europe/London", &["daily 09:00-18:00"], &[]);
        // Sunday 29 March 2026: 01:00 GMT → 02:00 BST. 09:00 BST = 08:00Z.
        assert_eq!(
            w.next_allowed(utc("2026-03-28T20:00:00Z")),
            Some(utc("2026-03-29T08:00:00Z"))
        );
        // Sunday 25 October 2026: 02:00 BST → 01:00 GMT. 09:00 GMT = 09:00Z.
        assert_eq!(
            w.next_allowed(utc("2026-10-24T20:00:00Z")),
            Some(utc("2026-10-25T09:00:00Z"))
        );
    }

    #[test]
    fn opening_inside_the_skipped_hour_starts_after_it() {
        // New York, 8 March 2026: local 02:00–02:59 do not exist; 03:00 EDT = 07:00Z.
        let w = window("America/New_York", &["sun 02:30-05:00"], &[]);
        assert_eq!(
            w.next_allowed(utc("2026-03-08T05:00:00Z")),
            Some(utc("2026-03-08T07:00:00Z"))
        );
        let w = window("America/New_York", &["sun 02:10-05:00"], &[]);
        assert_eq!(
            w.next_allowed(utc("2026-03-08T05:00:00Z")),
            Some(utc("2026-03-08T07:00:00Z")),
            "not a quarter-hour later"
        );
        // London, 29 March 2026: 01:00–01:59 skipped; 02:00 BST = 01:00Z.
        let w = window("Europe/London", &["sun 01:30-03:00"], &[]);
        assert_eq!(
            w.next_allowed(utc("2026-03-28T23:00:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn opening_inside_the_repeated_hour_uses_the_first() {
        // New York, 1 November 2026: 01:00–01:59 happen twice (EDT then EST).
        let w = window("America/New_York", &["sun 01:30-03:00"], &[]);
        // 01:30 EDT = 05:30Z (the second 01:30 EST is 06:30Z).
        assert_eq!(
            w.next_allowed(utc("2026-11-01T03:00:00Z")),
            Some(utc("2026-11-01T05:30:00Z"))
        );
        // London, 25 October 2026: first 01:30 is BST = 00:30Z.
        let w = window("Europe/London", &["sun 01:30-03:00"], &[]);
        assert_eq!(
            w.next_allowed(utc("2026-10-24T23:00:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn window_reopens_when_the_clock_goes_back() {
        // New York, 1 November 2026: after 01:59 EDT the clock reads 01:00 EST (06:00Z) again,
        // which is inside "00:00-01:30" once more.
        let w = window("America/New_York", &["sun 00:00-01:30"], &[]);
        assert!(!w.is_allowed(utc("2026-11-01T05:40:00Z")), "01:40 EDT");
        assert_eq!(
            w.next_allowed(utc("2026-11-01T05:40:00Z")),
            Some(utc("2026-11-01T06:00:00Z"))
        );
        assert!(w.is_allowed(utc("2026-11-01T06:29:00Z")), "01:29 EST");
        assert_eq!(
            w.next_allowed(utc("2026-11-01T06:30:00Z")),
            Some(utc("2026-11-08T05:00:00Z")),
            "next Sunday's midnight"
        );
    }

    #[test]
    fn closed_dates_are_skipped() {
        let w = window(
            "UTC",
            &["mon-fri 09:00-18:00"],
            &["2026-12-25", "2026-12-28"],
        );
        // Thursday 24 December 2026 after hours → Friday 25 closed → Monday 28 closed → Tue 29.
        assert_eq!(
            w.next_allowed(utc("2026-12-24T18:30:00Z")),
            Some(utc("2026-12-29T09:00:00Z"))
        );
        assert!(!w.is_allowed(utc("2026-12-25T10:00:00Z")));
    }

    #[test]
    fn no_window_within_a_year() {
        let never = window("UTC", &[], &[]);
        assert_eq!(never.next_allowed(utc("2026-01-01T00:00:00Z")), None);
        let always = CallingWindow::always().unwrap();
        let at = utc("2026-01-01T00:00:00Z");
        assert_eq!(always.next_allowed(at), Some(at));
        assert_eq!(always.closes_after(at), None);
    }

    #[test]
    fn closes_after_reports_the_end() {
        let w = office("Europe/London");
        assert_eq!(
            w.closes_after(utc("2026-01-05T10:00:00Z")),
            Some(utc("2026-01-05T18:00:00Z"))
        );
        assert_eq!(w.closes_after(utc("2026-01-05T20:00:00Z")), None);
    }

    #[test]
    fn bad_windows_name_the_entry() {
        let err = CallingWindow::new(&CallingWindowConfig {
            timezone: "Europe/Nowhere".into(),
            open: vec![],
            closed_dates: vec![],
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("Europe/Nowhere"), "{err}");
        let err = CallingWindow::new(&CallingWindowConfig {
            timezone: "UTC".into(),
            open: vec!["mon 9-5".into()],
            closed_dates: vec![],
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`mon 9-5`"), "{err}");
    }

    const ZONES: [&str; 6] = [
        "UTC",
        "Asia/Kolkata",
        "Pacific/Auckland",
        "America/New_York",
        "Europe/London",
        "Australia/Lord_Howe",
    ];

    /// A random weekly entry: chosen days, a start minute and a length.
    fn entry(start_min: u32, len_min: u32, day_mask: u8) -> Option<String> {
        let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let chosen: Vec<&str> = (0..7)
            .filter(|d| day_mask & (1 << d) != 0)
            .map(|d| days[d])
            .collect();
        let end = (start_min + len_min) % 1440;
        (end != start_min && !chosen.is_empty()).then(|| {
            format!(
                "{} {:02}:{:02}-{:02}:{:02}",
                chosen.join(","),
                start_min / 60,
                start_min % 60,
                end / 60,
                end % 60,
            )
        })
    }

    /// `next_allowed(at)` is allowed, not before `at`, and no whole minute strictly between
    /// them is allowed.
    fn check_earliest(zone: &str, entry: &str, at: DateTime<Utc>) -> Result<(), TestCaseError> {
        let w = window(zone, &[entry], &[]);
        let next = w
            .next_allowed(at)
            .ok_or_else(|| TestCaseError::fail("a weekly window opens within a week"))?;
        prop_assert!(next >= at);
        prop_assert!(w.is_allowed(next), "{entry} in {zone}: {next} not allowed");
        prop_assert!(next - at <= Duration::days(8));
        let mut probe = at + Duration::minutes(1);
        while probe < next {
            prop_assert!(
                !w.is_allowed(probe),
                "{entry} in {zone}: {probe} allowed before {next}"
            );
            probe += Duration::minutes(1);
        }
        Ok(())
    }

    /// Daylight-saving changes in 2026 (UTC instants) of the zones that have them.
    const CHANGES: [(&str, &str); 6] = [
        ("America/New_York", "2026-03-08T07:00:00Z"),
        ("America/New_York", "2026-11-01T06:00:00Z"),
        ("Europe/London", "2026-03-29T01:00:00Z"),
        ("Europe/London", "2026-10-25T01:00:00Z"),
        ("Pacific/Auckland", "2026-04-04T14:00:00Z"),
        ("Australia/Lord_Howe", "2026-04-04T15:00:00Z"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn next_allowed_is_the_earliest_allowed_instant(
            zone in 0..ZONES.len(),
            start_min in 0u32..1440,
            len_min in 1u32..600,
            day_mask in 1u8..128,
            offset_min in 0i64..(2 * 366 * 24 * 60),
        ) {
            let Some(entry) = entry(start_min, len_min, day_mask) else {
                return Ok(());
            };
            let at = utc("2025-01-01T00:00:00Z") + Duration::minutes(offset_min);
            check_earliest(ZONES[zone], &entry, at)?;
        }

        #[test]
        fn next_allowed_is_the_earliest_around_clock_changes(
            change in 0..CHANGES.len(),
            start_min in 0u32..1440,
            len_min in 1u32..300,
            day_mask in 1u8..128,
            offset_min in -(2 * 24 * 60i64)..(24 * 60),
        ) {
            let Some(entry) = entry(start_min, len_min, day_mask) else {
                return Ok(());
            };
            let (zone, instant) = CHANGES[change];
            check_earliest(zone, &entry, utc(instant) + Duration::minutes(offset_min))?;
        }
    }
}
